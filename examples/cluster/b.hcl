# Node b of a three-hub cluster on one machine, for trying the JetStream
# queue (docs/cluster.md). Start all three, in three terminals:
#
#   go run ./cmd/hubd run -config examples/cluster/a.hcl
#   go run ./cmd/hubd run -config examples/cluster/b.hcl
#   go run ./cmd/hubd run -config examples/cluster/c.hcl
#
# Each waits for the cluster's quorum (two of the three) before it listens
# on 127.0.0.1:2532. Mail to bob@example.test lands in the Maildir of the
# hub that delivers it; kill one hub and the others deliver what it had
# accepted. hubctl -socket var/cluster/b/admin.sock cluster status
#
# Relative paths are relative to this file's directory.

hub {
  hostname  = "hub-b.example.test"
  spool_dir = "../../var/cluster/b/spool"
}

queue {
  engine = "jetstream"
  node   = "b"
  cluster {
    name   = "example"
    listen = "127.0.0.1:6232"
    routes = ["nats://127.0.0.1:6231", "nats://127.0.0.1:6233"]
  }
}

admin {
  socket = "../../var/cluster/b/admin.sock"
}

accepted_domain "example.test" {}

mailbox "bob@example.test" {
  maildir = "../../var/cluster/b/mail/bob"
}

receive_connector "in" {
  bind = ["127.0.0.1:2532"]
  permissions {
    anonymous = ["submit"]
  }
}
