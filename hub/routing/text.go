package routing

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText prints r as `hubd routes` and `hubctl routes` do: the accepted
// domains, the send connector rows, then one paragraph per address.
func (r Report) WriteText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "Accepted domains (decided before any send connector):")
	fmt.Fprintln(tw, "  DOMAIN\tTYPE\tDELIVERY")
	for _, d := range r.Domains {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", d.Domain, d.Type, d.Delivery)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Send connectors (the first enabled row matching the domain whose size limit admits the message wins):")
	fmt.Fprintln(tw, "  ADDRESS SPACE\tCONNECTOR\tCOST\tNEXT HOP\tTLS\tMAX SIZE\t")
	for _, c := range r.SendConnectors {
		name := c.Connector
		if !c.Enabled {
			name += " (disabled)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t\n", c.AddressSpace, name, c.Cost, c.NextHop, c.TLS, sizeText(c.MaxMessageSize))
	}
	tw.Flush()
	if len(r.SendConnectors) == 0 {
		fmt.Fprintln(w, "  (none: mail for other domains waits in the unreachable queue)")
	}
	for _, a := range r.Addresses {
		fmt.Fprintln(w)
		a.writeText(w)
	}
}

func (a AddressReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "%s:\n", a.Address)
	for _, o := range a.Outcomes {
		target := o.Address
		if o.ResolvedFrom != "" {
			target += " (from " + o.ResolvedFrom + ")"
		}
		if o.Disposition != "deliver" {
			fmt.Fprintf(w, "  %s → %s: %s\n", target, o.Disposition, o.Reply)
			if o.Why != "" {
				fmt.Fprintf(w, "      because: %s\n", o.Why)
			}
			continue
		}
		fmt.Fprintf(w, "  %s → %s", target, o.NextHop)
		if o.Sender != "" {
			fmt.Fprintf(w, ", envelope sender %s", o.Sender)
		}
		fmt.Fprintf(w, "\n      because: %s\n", o.Why)
		if o.MXError != "" {
			fmt.Fprintf(w, "      MX of %s: %s\n", o.MXDomain, o.MXError)
		}
		for _, h := range o.MX {
			kind := fmt.Sprintf("MX %d", h.Pref)
			if h.Implicit {
				kind = "implicit MX (no MX records; the domain's own address)"
			}
			addrs := strings.Join(h.Addrs, ", ")
			if h.Error != "" {
				addrs = h.Error
			}
			fmt.Fprintf(w, "      %s %s: %s\n", kind, h.Name, addrs)
		}
	}
}

func sizeText(n int64) string {
	switch {
	case n > 0 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMB", n>>20)
	case n > 0 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKB", n>>10)
	case n > 0:
		return fmt.Sprintf("%d bytes", n)
	default:
		return "unlimited"
	}
}
