package telemetry

// The OTLP exporters, one constructor per signal, each for gRPC and
// HTTP/protobuf. Every setting policy resolved (from the block or OTEL_*)
// is passed as an option, so the exporter's own reading of the environment
// only fills what neither said (timeouts, compression).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploghttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/credentials"

	"hubd/policy"
)

// tlsConfig is the client TLS of a target that is not insecure: the
// system's roots, or those of ca_file.
func tlsConfig(t policy.OTLPTarget) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca_file %s holds no PEM certificate", t.CAFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

func newTraceExporter(ctx context.Context, t policy.OTLPTarget) (sdktrace.SpanExporter, error) {
	var tlsCfg *tls.Config
	if !t.Insecure {
		var err error
		if tlsCfg, err = tlsConfig(t); err != nil {
			return nil, err
		}
	}
	if t.Protocol == policy.ProtocolGRPC {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(t.Endpoint)}
		if t.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		if t.Headers != nil {
			opts = append(opts, otlptracegrpc.WithHeaders(t.Headers))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(t.Endpoint)}
	if t.URLPath != "" {
		opts = append(opts, otlptracehttp.WithURLPath(t.URLPath))
	}
	if t.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	} else {
		opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsCfg))
	}
	if t.Headers != nil {
		opts = append(opts, otlptracehttp.WithHeaders(t.Headers))
	}
	return otlptracehttp.New(ctx, opts...)
}

func newMetricExporter(ctx context.Context, t policy.OTLPTarget) (sdkmetric.Exporter, error) {
	var tlsCfg *tls.Config
	if !t.Insecure {
		var err error
		if tlsCfg, err = tlsConfig(t); err != nil {
			return nil, err
		}
	}
	if t.Protocol == policy.ProtocolGRPC {
		opts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(t.Endpoint)}
		if t.Insecure {
			opts = append(opts, otlpmetricgrpc.WithInsecure())
		} else {
			opts = append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		if t.Headers != nil {
			opts = append(opts, otlpmetricgrpc.WithHeaders(t.Headers))
		}
		return otlpmetricgrpc.New(ctx, opts...)
	}
	opts := []otlpmetrichttp.Option{otlpmetrichttp.WithEndpoint(t.Endpoint)}
	if t.URLPath != "" {
		opts = append(opts, otlpmetrichttp.WithURLPath(t.URLPath))
	}
	if t.Insecure {
		opts = append(opts, otlpmetrichttp.WithInsecure())
	} else {
		opts = append(opts, otlpmetrichttp.WithTLSClientConfig(tlsCfg))
	}
	if t.Headers != nil {
		opts = append(opts, otlpmetrichttp.WithHeaders(t.Headers))
	}
	return otlpmetrichttp.New(ctx, opts...)
}

func newLogExporter(ctx context.Context, t policy.OTLPTarget) (sdklog.Exporter, error) {
	var tlsCfg *tls.Config
	if !t.Insecure {
		var err error
		if tlsCfg, err = tlsConfig(t); err != nil {
			return nil, err
		}
	}
	if t.Protocol == policy.ProtocolGRPC {
		opts := []otlploggrpc.Option{otlploggrpc.WithEndpoint(t.Endpoint)}
		if t.Insecure {
			opts = append(opts, otlploggrpc.WithInsecure())
		} else {
			opts = append(opts, otlploggrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		if t.Headers != nil {
			opts = append(opts, otlploggrpc.WithHeaders(t.Headers))
		}
		return otlploggrpc.New(ctx, opts...)
	}
	opts := []otlploghttp.Option{otlploghttp.WithEndpoint(t.Endpoint)}
	if t.URLPath != "" {
		opts = append(opts, otlploghttp.WithURLPath(t.URLPath))
	}
	if t.Insecure {
		opts = append(opts, otlploghttp.WithInsecure())
	} else {
		opts = append(opts, otlploghttp.WithTLSClientConfig(tlsCfg))
	}
	if t.Headers != nil {
		opts = append(opts, otlploghttp.WithHeaders(t.Headers))
	}
	return otlploghttp.New(ctx, opts...)
}
