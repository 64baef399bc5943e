# Node c of a three-hub cluster on one machine, for trying the JetStream
# queue (docs/cluster.md). Start all three, in three terminals:
#
#   go run ./cmd/hubd run -config examples/cluster/a.hcl
#   go run ./cmd/hubd run -config examples/cluster/b.hcl
#   go run ./cmd/hubd run -config examples/cluster/c.hcl
#
# Each waits for the cluster's quorum (two of the three) before it listens
# on 127.0.0.1:2533. Mail to bob@example.test lands in the Maildir of the
# hub that delivers it; kill one hub and the others deliver what it had
# accepted. hubctl -socket var/cluster/c/admin.sock cluster status
#
# Relative paths are relative to this file's directory.

hub {
  hostname  = "hub-c.example.test"
  spool_dir = "../../var/cluster/c/spool"
}

queue {
  engine = "jetstream"
  node   = "c"
  cluster {
    name   = "example"
    listen = "127.0.0.1:6233"
    routes = ["nats://127.0.0.1:6231", "nats://127.0.0.1:6232"]
  }
}

admin {
  socket = "../../var/cluster/c/admin.sock"
}

accepted_domain "example.test" {}

mailbox "bob@example.test" {
  maildir = "../../var/cluster/c/mail/bob"
}

receive_connector "in" {
  bind = ["127.0.0.1:2533"]
  permissions {
    anonymous = ["submit"]
  }
}
