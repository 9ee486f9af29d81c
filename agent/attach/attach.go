// Package attach keeps a container's fixed network address attached: the
// overlay address VerneMQ's nodename and cluster listener are bound to.
//
// Three drivers share one interface. "weave" drives the Weave Net CLI, whose
// `weave attach` addresses vanish whenever the container restarts (weave
// issues #688, #1655), so the agent calls Ensure after every start. "docker"
// connects the container to a user-defined Docker network with a fixed
// --ip, which Docker itself restores on restart: the migration path from the
// unmaintained Weave. "none" is for containers that need no extra address.
package attach

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
)

// Attachment is what a driver saw. Address is the attached address in CIDR
// form ("10.0.0.1/24"), empty when there is none; Attached is true when the
// container has the address it should have (for Check, which is not told the
// wanted address: when it has any address from this driver).
type Attachment struct {
	Address  string
	Attached bool
	// Addresses lists every address the driver reports for the container
	// (weave can attach several), in its order.
	Addresses []string
}

// Driver attaches a network address to a container.
//
// Ensure makes container hold cidr (an address with prefix length, e.g.
// "10.0.0.1/24") and verifies it afterwards; it is idempotent. Check reports
// the current attachment without changing anything. Both return errors
// wrapping ErrNotRunning or ErrRouterDown when those are the cause.
type Driver interface {
	Ensure(ctx context.Context, container, cidr string) (Attachment, error)
	Check(ctx context.Context, container string) (Attachment, error)
}

// Errors callers branch on.
var (
	// ErrNotRunning: the container is stopped or does not exist; attach
	// again after it starts.
	ErrNotRunning = errors.New("container not running")
	// ErrRouterDown: the overlay router (weave) is not up on this host.
	ErrRouterDown = errors.New("network router not running")
)

// None is the driver for containers without an extra address: the container
// keeps whatever network it was created with. Ensure and Check always report
// Attached=true (nothing is missing); Ensure echoes cidr as Address so
// status reports show what the manifest asked for.
type None struct{}

// Ensure validates its arguments and reports Attached=true.
func (None) Ensure(_ context.Context, container, cidr string) (Attachment, error) {
	if err := checkContainer(container); err != nil {
		return Attachment{}, err
	}
	if cidr != "" {
		if _, err := parseCIDR(cidr); err != nil {
			return Attachment{}, fmt.Errorf("attach %s: %w", container, err)
		}
	}
	return Attachment{Address: cidr, Attached: true}, nil
}

// Check reports Attached=true.
func (None) Check(_ context.Context, container string) (Attachment, error) {
	if err := checkContainer(container); err != nil {
		return Attachment{}, err
	}
	return Attachment{Attached: true}, nil
}

// containerRE is Docker's container name syntax (which also covers ids). It
// keeps a name from being read as a CLI flag.
var containerRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

func checkContainer(c string) error {
	if !containerRE.MatchString(c) {
		return fmt.Errorf("attach: invalid container name %q", clip([]byte(c)))
	}
	return nil
}

// parseCIDR accepts an address with prefix length, host bits set as in
// "10.0.0.1/24".
func parseCIDR(cidr string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid address %q: want address/prefix, e.g. 10.0.0.1/24", clip([]byte(cidr)))
	}
	return p, nil
}

// clip shortens untrusted text quoted in an error message.
func clip(b []byte) string {
	const max = 200
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
