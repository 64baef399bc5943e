# A hub that relays everything through authenticated smart hosts: a mail
# provider's submission service and, for the organisation's other site, a
# second hub that verifies this one's client certificate.
#
#   hubd check -config examples/smarthost.hcl
#
# Relative paths are relative to this file's directory (examples/).

hub {
  hostname  = "hub.example.test"
  spool_dir = "../var/spool"
}

accepted_domain "example.test" {}

mailbox "alice@example.test" {
  maildir = "../var/mail/alice"
}

# Local applications may relay without AUTH.
receive_connector "apps" {
  bind             = ["127.0.0.1:2525"]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
}

# Everything else through the provider's submission service on port 465
# (implicit TLS, RFC 8314; the port is 465 when left out). The certificate
# is verified; the password is read from the file when the configuration
# is loaded (one trailing newline stripped) and never logged.
send_connector "provider" {
  address_spaces = ["*"]
  smart_hosts    = ["smtp.provider.example", "smtp2.provider.example:465"]
  tls            = "implicit"
  auth {
    username      = "hub@example.test"
    password_file = "smarthost.password" # a placeholder; keep the real one readable by hubd only
    # mechanisms  = ["PLAIN", "LOGIN"]   # the default: the first the server offers is used
    # allow_insecure = false             # the default: credentials only over TLS
  }
}

# The other site's hub, over STARTTLS on port 25 with a verified
# certificate, logging in with this hub's client certificate (its receive
# connector has client_ca_file and auth = ["external"]). Uncomment with
# real files:
#
# send_connector "site-b" {
#   address_spaces   = ["site-b.example.test"]
#   smart_hosts      = ["hub.site-b.example.test"]
#   tls              = "required"
#   ca_file          = "/etc/hubd/tls/organisation-ca.pem" # the other hub's CA, if private
#   client_cert_file = "/etc/hubd/tls/hub-client.pem"
#   client_key_file  = "/etc/hubd/tls/hub-client.key"
# }
