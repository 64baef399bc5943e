# hubd development configuration, used by `make run`.
#
# Everything listens on unprivileged loopback ports, mail for example.test is
# delivered to Maildirs under ./var/mail/, the queue lives in ./var/spool, and
# nothing outside this machine is needed. Relative paths are relative to this
# file's directory (examples/), hence the "../var".
#
#   127.0.0.1:2525  anonymous SMTP for example.test (like port 25)
#   127.0.0.1:2587  submission: STARTTLS, then AUTH PLAIN/LOGIN, then relay anywhere
#   127.0.0.1:2465  submission over implicit TLS (like port 465)
#   everything not for example.test goes to the smart host 127.0.0.1:2526

hub {
  hostname  = "hub.example.test"
  spool_dir = "../var/spool"
  # Short retries suit development; production keeps the defaults
  # (4 × 1m, 6 × 5m, then every 10m; a delay DSN after 4h; expiry after 2d).
  quick_retry_interval     = "10s"
  transient_retry_interval = "30s"
  retry_interval           = "1m"
}

# A distribution list: local and remote members; bounces for the remote copies
# go to the owner.
distribution_list "team@example.test" {
  members = ["alice@example.test", "bob@example.test", "carol@elsewhere.example"]
  owner   = "postmaster@example.test"
}

accepted_domain "example.test" {
  type = "authoritative"
}

mailbox "alice@example.test" {
  # bcrypt of "alice-dev-password" (make one with: hubd hash-password)
  password_hash = "$2a$12$/SR6gH85J.Uk8zADwyMLhu39uWXfCVgwpzUQcMryFBUvvSTtCiMGq"
  maildir       = "../var/mail/alice"
}

mailbox "bob@example.test" {
  # bcrypt of "bob-dev-password"
  password_hash = "$2a$12$L4pEWzPGnCmHKNrcv.gsEe5OuPaNbkvVzgIsUV4KLKLOJ9MH.SbPW"
  maildir       = "../var/mail/bob"
}

alias "postmaster@example.test" {
  to = ["alice@example.test"]
}

# Port 25's role: anyone may send to example.test; unknown users are refused at
# RCPT time; nobody may relay.
receive_connector "default" {
  usage = "internet"
  bind  = ["127.0.0.1:2525"]
  permissions {
    anonymous = ["submit"]
  }
  # usage = "internet" turns SPF, DKIM and DMARC on; they would ask DNS about
  # every sender, and example.test (RFC 2606) is in no DNS. Off here so that
  # `make run` works offline; production.hcl shows them on.
  checks {
    spf   = false
    dkim  = false
    dmarc = false
  }
}

# Port 587's role (RFC 6409): STARTTLS, then AUTH, then relay anywhere.
receive_connector "submission" {
  usage = "client"
  bind  = ["127.0.0.1:2587"]
  tls {
    self_signed = true # development only: made under the spool at first start
  }
  auth = ["plain", "login"]
  permissions {
    authenticated = ["submit", "relay"]
  }
}

# Port 465's role (RFC 8314): the same as submission, over implicit TLS.
receive_connector "submissions" {
  usage = "client"
  bind  = ["127.0.0.1:2465"]
  tls {
    mode        = "implicit"
    self_signed = true
  }
  auth = ["plain", "login"]
  permissions {
    authenticated = ["submit", "relay"]
  }
}

# Everything that is not for an accepted domain goes to a smart host. Nothing
# listens there by default: such mail waits in the queue and is retried. Start
# a sink to see it arrive, e.g. `python3 -m aiosmtpd -n -l 127.0.0.1:2526`.
send_connector "smarthost" {
  address_spaces = ["*"]
  smart_hosts    = ["127.0.0.1:2526"]
  tls            = "opportunistic"
}

# The admin API for hubctl: `go run ./cmd/hubctl -socket var/admin.sock queue list`.
admin {
  socket = "../var/admin.sock"
}

# No telemetry block: nothing dials out and nothing more listens (traces
# "none", no /metrics), unless OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER
# are set in the environment. To watch traces locally, start Jaeger
# (all-in-one, OTLP on 4317/4318) and uncomment:
# telemetry {
#   traces {
#     exporter = "otlp"
#     endpoint = "http://127.0.0.1:4318"
#   }
#   metrics { prometheus_listen = "127.0.0.1:9464" }
# }
