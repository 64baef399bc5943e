package policy

// The HCL schema, decoded with gohcl. Optional scalars are pointers so that
// "unset" can be told from a zero value (presets fill only what is unset);
// lists are kept as expressions so each element can be checked and reported
// at its own source range. Sizes and durations are strings parsed in the
// validation pass.

import "github.com/hashicorp/hcl/v2"

type fileSchema struct {
	Hubs              []hubSchema              `hcl:"hub,block"`
	AcceptedDomains   []acceptedDomainSchema   `hcl:"accepted_domain,block"`
	Mailboxes         []mailboxSchema          `hcl:"mailbox,block"`
	Aliases           []aliasSchema            `hcl:"alias,block"`
	AliasesFiles      []aliasesFileSchema      `hcl:"aliases_file,block"`
	DistributionLists []distributionListSchema `hcl:"distribution_list,block"`
	ReceiveConnectors []receiveConnectorSchema `hcl:"receive_connector,block"`
	SendConnectors    []sendConnectorSchema    `hcl:"send_connector,block"`
	Admins            []adminSchema            `hcl:"admin,block"`
	Users             []userSchema             `hcl:"user,block"`
	AuthBackends      []authBackendSchema      `hcl:"auth_backend,block"`
	Telemetries       []telemetrySchema        `hcl:"telemetry,block"`
	DKIM              []dkimSchema             `hcl:"dkim,block"`  // dkim.go
	Queues            []queueSchema            `hcl:"queue,block"` // queueblock.go
}

type hubSchema struct {
	Hostname                             *string             `hcl:"hostname,optional"`
	HostnameRange                        hcl.Range           `hcl:"hostname,attr_value_range"`
	SpoolDir                             *string             `hcl:"spool_dir,optional"`
	SpoolDirRange                        hcl.Range           `hcl:"spool_dir,attr_value_range"`
	QuickRetryCount                      *int                `hcl:"quick_retry_count,optional"`
	QuickRetryCountRange                 hcl.Range           `hcl:"quick_retry_count,attr_value_range"`
	QuickRetryInterval                   *string             `hcl:"quick_retry_interval,optional"`
	QuickRetryIntervalRange              hcl.Range           `hcl:"quick_retry_interval,attr_value_range"`
	TransientRetryCount                  *int                `hcl:"transient_retry_count,optional"`
	TransientRetryCountRange             hcl.Range           `hcl:"transient_retry_count,attr_value_range"`
	TransientRetryInterval               *string             `hcl:"transient_retry_interval,optional"`
	TransientRetryIntervalRange          hcl.Range           `hcl:"transient_retry_interval,attr_value_range"`
	RetryInterval                        *string             `hcl:"retry_interval,optional"`
	RetryIntervalRange                   hcl.Range           `hcl:"retry_interval,attr_value_range"`
	MessageExpiration                    *string             `hcl:"message_expiration,optional"`
	ExpirationRange                      hcl.Range           `hcl:"message_expiration,attr_value_range"`
	DelayDSNAfter                        *string             `hcl:"delay_dsn_after,optional"`
	DelayDSNAfterRange                   hcl.Range           `hcl:"delay_dsn_after,attr_value_range"`
	PoisonThreshold                      *int                `hcl:"poison_threshold,optional"`
	PoisonThresholdRange                 hcl.Range           `hcl:"poison_threshold,attr_value_range"`
	MaxOutboundConnections               *int                `hcl:"max_outbound_connections,optional"`
	MaxOutboundConnectionsRange          hcl.Range           `hcl:"max_outbound_connections,attr_value_range"`
	MaxPerDomainOutboundConnections      *int                `hcl:"max_per_domain_outbound_connections,optional"`
	MaxPerDomainOutboundConnectionsRange hcl.Range           `hcl:"max_per_domain_outbound_connections,attr_value_range"`
	MaxHopCount                          *int                `hcl:"max_hop_count,optional"`
	MaxHopCountRange                     hcl.Range           `hcl:"max_hop_count,attr_value_range"`
	MaxAliasDepth                        *int                `hcl:"max_alias_depth,optional"`
	MaxAliasDepthRange                   hcl.Range           `hcl:"max_alias_depth,attr_value_range"`
	ShutdownGrace                        *string             `hcl:"shutdown_grace,optional"`
	ShutdownGraceRange                   hcl.Range           `hcl:"shutdown_grace,attr_value_range"`
	MaildropDir                          *string             `hcl:"maildrop_dir,optional"`
	MaildropDirRange                     hcl.Range           `hcl:"maildrop_dir,attr_value_range"`
	MaildropGroup                        *string             `hcl:"maildrop_group,optional"`
	MaildropGroupRange                   hcl.Range           `hcl:"maildrop_group,attr_value_range"`
	UsersFile                            *string             `hcl:"users_file,optional"`
	UsersFileRange                       hcl.Range           `hcl:"users_file,attr_value_range"`
	DNSServers                           hcl.Expression      `hcl:"dns_servers,optional"`
	TrackingLog                          *trackingLogSchema  `hcl:"tracking_log,block"`
	BackPressure                         *backPressureSchema `hcl:"back_pressure,block"`
	DefRange                             hcl.Range           `hcl:",def_range"`
}

type backPressureSchema struct {
	Enabled                  *bool     `hcl:"enabled,optional"`
	DiskFreeHigh             *string   `hcl:"disk_free_high,optional"`
	DiskFreeHighRange        hcl.Range `hcl:"disk_free_high,attr_value_range"`
	DiskFreeMedium           *string   `hcl:"disk_free_medium,optional"`
	DiskFreeMediumRange      hcl.Range `hcl:"disk_free_medium,attr_value_range"`
	MemoryHighPercent        *int      `hcl:"memory_high_percent,optional"`
	MemoryHighPercentRange   hcl.Range `hcl:"memory_high_percent,attr_value_range"`
	MemoryMediumPercent      *int      `hcl:"memory_medium_percent,optional"`
	MemoryMediumPercentRange hcl.Range `hcl:"memory_medium_percent,attr_value_range"`
	CheckInterval            *string   `hcl:"check_interval,optional"`
	CheckIntervalRange       hcl.Range `hcl:"check_interval,attr_value_range"`
}

type trackingLogSchema struct {
	Enabled               *bool     `hcl:"enabled,optional"`
	Dir                   *string   `hcl:"dir,optional"`
	DirRange              hcl.Range `hcl:"dir,attr_value_range"`
	MaxFileSize           *string   `hcl:"max_file_size,optional"`
	MaxFileSizeRange      hcl.Range `hcl:"max_file_size,attr_value_range"`
	MaxAge                *string   `hcl:"max_age,optional"`
	MaxAgeRange           hcl.Range `hcl:"max_age,attr_value_range"`
	MaxDirectorySize      *string   `hcl:"max_directory_size,optional"`
	MaxDirectorySizeRange hcl.Range `hcl:"max_directory_size,attr_value_range"`
}

type acceptedDomainSchema struct {
	Name                string         `hcl:"name,label"`
	NameRange           hcl.Range      `hcl:"name,label_range"`
	Type                *string        `hcl:"type,optional"`
	TypeRange           hcl.Range      `hcl:"type,attr_value_range"`
	Recipients          hcl.Expression `hcl:"recipients,optional"`
	RecipientsFile      *string        `hcl:"recipients_file,optional"`
	RecipientsFileRange hcl.Range      `hcl:"recipients_file,attr_value_range"`
	DefRange            hcl.Range      `hcl:",def_range"`
}

type mailboxSchema struct {
	Address           string         `hcl:"address,label"`
	AddressRange      hcl.Range      `hcl:"address,label_range"`
	PasswordHash      *string        `hcl:"password_hash,optional"`
	PasswordHashRange hcl.Range      `hcl:"password_hash,attr_value_range"`
	Maildir           *string        `hcl:"maildir,optional"`
	MaildirRange      hcl.Range      `hcl:"maildir,attr_value_range"`
	Addresses         hcl.Expression `hcl:"addresses,optional"`
	LMTP              *string        `hcl:"lmtp,optional"`
	LMTPRange         hcl.Range      `hcl:"lmtp,attr_value_range"`
	DefRange          hcl.Range      `hcl:",def_range"`
}

type aliasSchema struct {
	Address      string         `hcl:"address,label"`
	AddressRange hcl.Range      `hcl:"address,label_range"`
	To           hcl.Expression `hcl:"to"`
	DefRange     hcl.Range      `hcl:",def_range"`
}

type distributionListSchema struct {
	Address      string         `hcl:"address,label"`
	AddressRange hcl.Range      `hcl:"address,label_range"`
	Members      hcl.Expression `hcl:"members"`
	Owner        *string        `hcl:"owner,optional"`
	OwnerRange   hcl.Range      `hcl:"owner,attr_value_range"`
	DefRange     hcl.Range      `hcl:",def_range"`
}

type receiveTLSSchema struct {
	Mode          *string   `hcl:"mode,optional"`
	ModeRange     hcl.Range `hcl:"mode,attr_value_range"`
	CertFile      *string   `hcl:"cert_file,optional"`
	CertFileRange hcl.Range `hcl:"cert_file,attr_value_range"`
	KeyFile       *string   `hcl:"key_file,optional"`
	KeyFileRange  hcl.Range `hcl:"key_file,attr_value_range"`
	SelfSigned    *bool     `hcl:"self_signed,optional"`
	ClientCAFile  *string   `hcl:"client_ca_file,optional"`
	ClientCARange hcl.Range `hcl:"client_ca_file,attr_value_range"`
	MinVersion    *string   `hcl:"min_version,optional"`
	MinVerRange   hcl.Range `hcl:"min_version,attr_value_range"`
	DefRange      hcl.Range `hcl:",def_range"`
}

type permissionsSchema struct {
	Anonymous     hcl.Expression `hcl:"anonymous,optional"`
	Authenticated hcl.Expression `hcl:"authenticated,optional"`
	Trusted       hcl.Expression `hcl:"trusted,optional"`
}

type receiveConnectorSchema struct {
	Name       string    `hcl:"name,label"`
	NameRange  hcl.Range `hcl:"name,label_range"`
	DefRange   hcl.Range `hcl:",def_range"`
	Enabled    *bool     `hcl:"enabled,optional"`
	Usage      *string   `hcl:"usage,optional"`
	UsageRange hcl.Range `hcl:"usage,attr_value_range"`

	Bind              hcl.Expression     `hcl:"bind"`
	RemoteIPRanges    hcl.Expression     `hcl:"remote_ip_ranges,optional"`
	FQDN              *string            `hcl:"fqdn,optional"`
	FQDNRange         hcl.Range          `hcl:"fqdn,attr_value_range"`
	Banner            *string            `hcl:"banner,optional"`
	TLS               *receiveTLSSchema  `hcl:"tls,block"`
	RequireTLS        *bool              `hcl:"require_tls,optional"`
	RequireTLSRange   hcl.Range          `hcl:"require_tls,attr_range"`
	Auth              hcl.Expression     `hcl:"auth,optional"`
	AllowInsecureAuth *bool              `hcl:"allow_insecure_auth,optional"`
	AuthBackend       *string            `hcl:"auth_backend,optional"`
	AuthBackendRange  hcl.Range          `hcl:"auth_backend,attr_value_range"`
	ExternallySecured *bool              `hcl:"externally_secured,optional"`
	Permissions       *permissionsSchema `hcl:"permissions,block"`
	Checks            *checksSchema      `hcl:"checks,block"` // checks.go

	MaxMessageSize                      *string        `hcl:"max_message_size,optional"`
	MaxMessageSizeRange                 hcl.Range      `hcl:"max_message_size,attr_value_range"`
	MaxHeaderSize                       *string        `hcl:"max_header_size,optional"`
	MaxHeaderSizeRange                  hcl.Range      `hcl:"max_header_size,attr_value_range"`
	MaxRecipients                       *int           `hcl:"max_recipients,optional"`
	MaxRecipientsRange                  hcl.Range      `hcl:"max_recipients,attr_value_range"`
	MaxHopCount                         *int           `hcl:"max_hop_count,optional"`
	MaxHopCountRange                    hcl.Range      `hcl:"max_hop_count,attr_value_range"`
	MaxInboundConnections               *int           `hcl:"max_inbound_connections,optional"`
	MaxInboundConnectionsRange          hcl.Range      `hcl:"max_inbound_connections,attr_value_range"`
	MaxInboundConnectionsPerSource      *int           `hcl:"max_inbound_connections_per_source,optional"`
	MaxInboundConnectionsPerSourceRange hcl.Range      `hcl:"max_inbound_connections_per_source,attr_value_range"`
	MaxProtocolErrors                   *int           `hcl:"max_protocol_errors,optional"`
	MaxProtocolErrorsRange              hcl.Range      `hcl:"max_protocol_errors,attr_value_range"`
	MaxLogonFailures                    *int           `hcl:"max_logon_failures,optional"`
	MaxLogonFailuresRange               hcl.Range      `hcl:"max_logon_failures,attr_value_range"`
	ConnectionTimeout                   *string        `hcl:"connection_timeout,optional"`
	ConnectionTimeoutRange              hcl.Range      `hcl:"connection_timeout,attr_value_range"`
	ConnectionInactivityTimeout         *string        `hcl:"connection_inactivity_timeout,optional"`
	ConnectionInactivityTimeoutRange    hcl.Range      `hcl:"connection_inactivity_timeout,attr_value_range"`
	TarpitInterval                      *string        `hcl:"tarpit_interval,optional"`
	TarpitIntervalRange                 hcl.Range      `hcl:"tarpit_interval,attr_value_range"`
	MessageRateLimit                    *int           `hcl:"message_rate_limit,optional"`
	MessageRateLimitRange               hcl.Range      `hcl:"message_rate_limit,attr_value_range"`
	MessageRateSource                   *string        `hcl:"message_rate_source,optional"`
	MessageRateSourceRange              hcl.Range      `hcl:"message_rate_source,attr_value_range"`
	MaxConnPercentPerSource             *int           `hcl:"max_inbound_connections_percentage_per_source,optional"`
	MaxConnPercentPerSourceRange        hcl.Range      `hcl:"max_inbound_connections_percentage_per_source,attr_value_range"`
	ConnectionRateLimit                 *int           `hcl:"connection_rate_limit,optional"`
	ConnectionRateLimitRange            hcl.Range      `hcl:"connection_rate_limit,attr_value_range"`
	RecipientRateLimit                  *int           `hcl:"recipient_rate_limit,optional"`
	RecipientRateLimitRange             hcl.Range      `hcl:"recipient_rate_limit,attr_value_range"`
	MaxAuthFailuresPerSource            *int           `hcl:"max_auth_failures_per_source,optional"`
	MaxAuthFailuresPerSourceRange       hcl.Range      `hcl:"max_auth_failures_per_source,attr_value_range"`
	MaxAuthFailuresPerNetwork           *int           `hcl:"max_auth_failures_per_network,optional"`
	MaxAuthFailuresPerNetworkRange      hcl.Range      `hcl:"max_auth_failures_per_network,attr_value_range"`
	AuthFailureWindow                   *string        `hcl:"auth_failure_window,optional"`
	AuthFailureWindowRange              hcl.Range      `hcl:"auth_failure_window,attr_value_range"`
	ProxyProtocol                       *bool          `hcl:"proxy_protocol,optional"`
	ProxyProtocolRange                  hcl.Range      `hcl:"proxy_protocol,attr_range"`
	TrustedProxies                      hcl.Expression `hcl:"trusted_proxies,optional"`
	MaxCommandLineLength                *int           `hcl:"max_command_line_length,optional"`
	MaxCommandLineLengthRange           hcl.Range      `hcl:"max_command_line_length,attr_value_range"`
	MaxCommandsBeforeMail               *int           `hcl:"max_commands_before_mail,optional"`
	MaxCommandsBeforeMailRange          hcl.Range      `hcl:"max_commands_before_mail,attr_value_range"`
	RequireEHLODomain                   *bool          `hcl:"require_ehlo_domain,optional"`
	AllowVRFY                           *bool          `hcl:"allow_vrfy,optional"`
	AllowEXPN                           *bool          `hcl:"allow_expn,optional"`
}

type sendConnectorSchema struct {
	Name           string         `hcl:"name,label"`
	NameRange      hcl.Range      `hcl:"name,label_range"`
	DefRange       hcl.Range      `hcl:",def_range"`
	Enabled        *bool          `hcl:"enabled,optional"`
	AddressSpaces  hcl.Expression `hcl:"address_spaces"`
	SmartHosts     hcl.Expression `hcl:"smart_hosts,optional"`
	DNSRouting     *bool          `hcl:"dns_routing,optional"`
	TLS            *string        `hcl:"tls,optional"`
	TLSRange       hcl.Range      `hcl:"tls,attr_value_range"`
	MaxMessageSize *string        `hcl:"max_message_size,optional"`
	MaxSizeRange   hcl.Range      `hcl:"max_message_size,attr_value_range"`
	FQDN           *string        `hcl:"fqdn,optional"`
	FQDNRange      hcl.Range      `hcl:"fqdn,attr_value_range"`
	SendOrgHeaders *bool          `hcl:"send_org_headers,optional"`
	// Smart-host authentication and client certificate (sendauth.go).
	Auth            *sendAuthSchema `hcl:"auth,block"`
	ClientCertFile  *string         `hcl:"client_cert_file,optional"`
	ClientCertRange hcl.Range       `hcl:"client_cert_file,attr_value_range"`
	ClientKeyFile   *string         `hcl:"client_key_file,optional"`
	ClientKeyRange  hcl.Range       `hcl:"client_key_file,attr_value_range"`
	CAFile          *string         `hcl:"ca_file,optional"`
	CAFileRange     hcl.Range       `hcl:"ca_file,attr_value_range"`
}

type userSchema struct {
	Login             string         `hcl:"login,label"`
	LoginRange        hcl.Range      `hcl:"login,label_range"`
	PasswordHash      string         `hcl:"password_hash"`
	PasswordHashRange hcl.Range      `hcl:"password_hash,attr_value_range"`
	Senders           hcl.Expression `hcl:"senders,optional"`
	DefRange          hcl.Range      `hcl:",def_range"`
}

type authBackendSchema struct {
	Name               string    `hcl:"name,label"`
	NameRange          hcl.Range `hcl:"name,label_range"`
	Type               *string   `hcl:"type,optional"`
	TypeRange          hcl.Range `hcl:"type,attr_value_range"`
	Socket             *string   `hcl:"socket,optional"`
	SocketRange        hcl.Range `hcl:"socket,attr_value_range"`
	Timeout            *string   `hcl:"timeout,optional"`
	TimeoutRange       hcl.Range `hcl:"timeout,attr_value_range"`
	Service            *string   `hcl:"service,optional"`
	ServiceRange       hcl.Range `hcl:"service,attr_value_range"`
	SendersDomainMatch *bool     `hcl:"senders_domain_match,optional"`
	DefRange           hcl.Range `hcl:",def_range"`
}
