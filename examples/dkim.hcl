# DKIM signing (RFC 6376; Ed25519 per RFC 8463): a submission hub that signs
# what its users and application servers send, with an RSA and an Ed25519
# key at once (dual signing: receivers that know Ed25519 check both, the
# others the RSA one).
#
# Make the keys first, beside this file, and publish the TXT records the
# command prints (README: "DKIM keys and DNS records"):
#
#   mkdir -p dkim
#   hubd dkim keygen -domain example.com -selector s2026r -out dkim/example.com.s2026r.key
#   hubd dkim keygen -domain example.com -selector s2026e -algorithm ed25519 -out dkim/example.com.s2026e.key
#
# then: hubd check -config dkim.hcl (a missing or weak key is reported at its
# key_file line).

hub {
  hostname  = "mx1.example.com" # DSNs come from MAILER-DAEMON@mx1.example.com: signed d=example.com
  spool_dir = "./var/spool"
}

accepted_domain "example.com" {}

mailbox "alice@example.com" {
  password_hash = "$2a$12$/SR6gH85J.Uk8zADwyMLhu39uWXfCVgwpzUQcMryFBUvvSTtCiMGq" # as in dev.hcl; make yours with hubd hash-password
}

receive_connector "internet" { # anonymous: mail for example.com; never signed
  bind = ["0.0.0.0:2525"]
  permissions { anonymous = ["submit"] }
}

receive_connector "submission" { # AUTH: signed
  usage               = "client"
  bind                = ["0.0.0.0:2587"]
  require_tls         = false # development only: use a tls block and true
  allow_insecure_auth = true
}

receive_connector "apps" { # a trusted range that may relay without AUTH: signed
  bind             = ["0.0.0.0:2525"]
  remote_ip_ranges = ["10.1.2.0/28"]
  permissions { anonymous = ["submit", "relay"] }
}

send_connector "internet" {
  address_spaces = ["*"]
  dns_routing    = true
}

# Mail whose From: is example.com or any subdomain of it (news.example.com)
# is signed d=example.com (DMARC's relaxed alignment accepts it).
dkim "example.com" {
  key {
    selector = "s2026r"
    key_file = "dkim/example.com.s2026r.key" # RSA, 2048 bits
  }
  key {
    selector = "s2026e"
    key_file = "dkim/example.com.s2026e.key" # Ed25519
  }
  # headers = [...]        # default: RFC 6376 §5.4.1's list, From oversigned
  # sign    = "submissions" # default; "all" also signs mail relayed from anonymous senders
}
