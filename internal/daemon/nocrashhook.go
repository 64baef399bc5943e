//go:build !crashhook

package daemon

import "hubd/hub/delivery"

// hookDeliverers is the identity: the crash test hook (crashhook.go) exists
// only in a binary built with -tags crashhook.
func hookDeliverers(ds map[delivery.Kind]delivery.Deliverer) map[delivery.Kind]delivery.Deliverer {
	return ds
}
