# hubd for a real deployment: install as /etc/hubd/hubd.hcl and start with
#   hubd run -config /etc/hubd/hubd.hcl
# Relative paths are relative to this file's directory (/etc/hubd).
#
#   :25   the Internet: anonymous mail for our accepted domains only
#   :25   from 10.1.2.0/28: the application servers, which may relay without AUTH
#   :587  submission: STARTTLS, then AUTH, then relay anywhere (RFC 6409)
#   :465  submission over implicit TLS (RFC 8314)
#
# Check it before (re)loading: hubd check -config /etc/hubd/hubd.hcl
#
# The directories below are where examples/systemd/hubd.service lets hubd
# write (StateDirectory=, LogsDirectory=, RuntimeDirectory=, ReadWritePaths=):
# change one here and the unit must follow (cmd/hubd/unit_test.go checks
# that they agree).

hub {
  hostname  = "mx1.example.com"
  spool_dir = "/var/lib/hubd/queue" # StateDirectory=hubd
  # sendmail(1) drops local mail in /var/lib/hubd/maildrop (the default beside
  # the spool), which hubd gives to this group; sendmail is installed setgid
  # to it (docs/dropin.md). Created at install: groupadd --system hubd-drop
  maildrop_group = "hubd-drop"
  # shutdown_grace stays 30s: the unit's TimeoutStopSec=60 covers it and the
  # 10s deliveries in flight get.

  # MX routing asks /etc/resolv.conf's servers unless told otherwise; a
  # local validating resolver (unbound) is the usual choice for a mail hub:
  # dns_servers = ["127.0.0.1"]

  # Retries, expiry, DSNs and outbound limits keep Exchange's hub defaults:
  # 4 × 1m, 6 × 5m, then every 10m; a delay DSN after 4h; expiry after 2d;
  # 1000 connections overall, 20 per next hop; poison queue after 2 crashes
  # attributed to a message (README: crash attribution).

  tracking_log {
    dir = "/var/log/hubd/tracking" # LogsDirectory=hubd; one JSON line per message event; kept 30 days
  }

  # Refuse anonymous mail when the spool's filesystem has less than 2GB free,
  # all mail under 1GB (452 4.3.1), rather than accept what cannot be stored.
  back_pressure {
    disk_free_high   = "1GB"
    disk_free_medium = "2GB"
  }
}

# hubctl, mailq and `sendmail -bp` talk to hubd here (RuntimeDirectory=hubd).
# The socket is mode 0660, group hubd: root and members of hubd may use it.
admin {
  socket = "/run/hubd/admin.sock"
}

accepted_domain "example.com" {
  type = "authoritative" # mailboxes live here
}

# Our domain whose mailboxes live on another server: accepted here, validated at
# RCPT time against the list (no backscatter), then relayed on.
accepted_domain "corp.example.com" {
  type       = "internal_relay"
  recipients = ["ceo@corp.example.com", "sales@corp.example.com"]
}

mailbox "alice@example.com" {
  password_hash = "$2a$12$/SR6gH85J.Uk8zADwyMLhu39uWXfCVgwpzUQcMryFBUvvSTtCiMGq"
  maildir       = "/var/mail/vhosts/example.com/alice"
  addresses     = ["a.smith@example.com"]
}

# A mailbox kept by Dovecot: delivered over LMTP instead of to a Maildir.
# bob+lists@example.com reaches Dovecot as addressed; with
# lmtp_save_to_detail_mailbox = yes and recipient_delimiter = + it files the
# message into bob's "lists" folder.
mailbox "bob@example.com" {
  lmtp = "unix:/run/dovecot/lmtp"
}

# Logins with no mailbox here: submission credentials with the senders each
# may use (README: Logins). Hashes from `hubd hash-password [-argon2id]`.
# user "scanner" {
#   password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."
#   senders       = ["scanner@example.com", "@printers.example.com"]
# }
# More of them, one "login:hash[:sender,sender...]" a line, in a file that is
# re-read at every reload: hub { users_file = "/etc/hubd/users" }
#
# Or let Dovecot check passwords (one password database for IMAP and
# submission): name its auth socket here, and set auth_backend = "dovecot" on
# the submission connectors. Unreachable → 454 4.7.0; refused → 535 5.7.8.
# auth_backend "dovecot" {
#   socket  = "/run/dovecot/auth-client"
#   timeout = "5s"
# }

# Bounces for the partner's copies go to the list owner, not to each author.
distribution_list "staff@example.com" {
  members = ["alice@example.com", "bob@example.com", "consultant@partner.example"]
  owner   = "postmaster@example.com"
}

alias "postmaster@example.com" { to = ["alice@example.com"] }
alias "abuse@example.com" { to = ["alice@example.com"] }

# The system's /etc/aliases (aliases(5)) as more aliases: bare names apply to
# every authoritative accepted domain unless domains says otherwise. Pipes and
# file targets are refused at `hubd check`; run newaliases after editing it.
# aliases_file "/etc/aliases" { domains = ["example.com"] }

receive_connector "internet" {
  usage            = "internet"
  bind             = ["0.0.0.0:25"]
  remote_ip_ranges = ["0.0.0.0/0"]
  tls {
    cert_file = "tls/fullchain.pem"
    key_file  = "tls/privkey.pem"
  }
  permissions {
    anonymous = ["submit"]
  }
  # Abuse resistance (the tarpit, 2% of free slots per source, brute-force
  # defence and command hardening are on by default).
  message_rate_limit    = 60 # per client source (IPv4 address, IPv6 /64) per minute (421 4.4.2)
  connection_rate_limit = 120
  # SPF, DKIM and DMARC are on for usage = "internet" (Authentication-Results
  # on every message); refusing on their results is a choice:
  checks {
    spf_reject   = false # true: SPF "fail" at MAIL gets 550 5.7.23
    dmarc_reject = true  # DMARC "fail" under p=reject gets 550 5.7.1
  }
}

# Same binding, narrower range: these peers get this connector, not "internet".
receive_connector "applications" {
  usage            = "custom"
  bind             = ["0.0.0.0:25"]
  remote_ip_ranges = ["10.1.2.0/28"]
  permissions {
    anonymous = ["submit", "relay", "any_sender"]
  }
}

receive_connector "submission" {
  usage = "client"
  bind  = ["0.0.0.0:587"]
  tls {
    cert_file = "tls/fullchain.pem"
    key_file  = "tls/privkey.pem"
  }
}

receive_connector "submissions" {
  usage = "client"
  bind  = ["0.0.0.0:465"]
  tls {
    mode      = "implicit"
    cert_file = "tls/fullchain.pem"
    key_file  = "tls/privkey.pem"
  }
}

# The mailbox server for corp.example.com.
send_connector "corp" {
  address_spaces = ["corp.example.com"]
  smart_hosts    = ["[10.1.3.10]:25"]
  tls            = "required"
}

# Everything else through the provider's outbound relay.
send_connector "outbound" {
  address_spaces = ["*"]
  smart_hosts    = ["smtp-relay.example.net:587", "smtp-relay2.example.net:587"]
}

# Telemetry (README "Observing hubd"). Off unless configured: nothing dials
# out by default. Settings left out here fall back to the OTEL_* variables.
# telemetry {
#   service_name     = "hubd"
#   service_instance = "mx1"            # default: the host name
#   record_addresses = false            # envelope addresses in spans are personal data
#   traces {
#     exporter       = "otlp"           # none | otlp | stdout
#     protocol       = "grpc"           # grpc | http/protobuf
#     endpoint       = "otel-collector.corp.example.com:4317"
#     ca_file        = "tls/collector-ca.pem"
#     headers        = { authorization = "Bearer REPLACE-ME" }
#     sampling_ratio = 0.1              # keep 10 % of new traces; children follow their parent
#   }
#   metrics {
#     prometheus_listen = "127.0.0.1:9464"   # scrape http://127.0.0.1:9464/metrics
#   }
#   logs {
#     format = "json"                   # text | json, on stderr (journald)
#   }
# }
