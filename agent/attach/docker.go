package attach

import (
	"context"
	"fmt"
	"regexp"
)

// DockerNetworks is what the docker driver needs from the container engine;
// the agent adapts the Docker client to it.
type DockerNetworks interface {
	// EnsureNetwork creates the user-defined network (bridge or overlay,
	// the adapter's choice) with the given subnet unless it exists; an
	// existing network with another subnet is an error.
	EnsureNetwork(ctx context.Context, network, subnet string) error
	// Connected returns the container's IPv4 address on network, ok=false
	// when it is not connected. A missing container is an error wrapping
	// ErrNotRunning.
	Connected(ctx context.Context, container, network string) (ip string, ok bool, err error)
	// Connect connects the container with the fixed address ip
	// (`docker network connect --ip`), which Docker keeps across restarts.
	Connect(ctx context.Context, network, container, ip string) error
	// Disconnect removes the container from network.
	Disconnect(ctx context.Context, network, container string) error
}

// Docker attaches through a user-defined Docker network: the address is part
// of the container's configuration, so it survives restarts and Ensure only
// has work to do once.
type Docker struct {
	Engine  DockerNetworks
	Network string // e.g. "pullship"; the subnet is taken from the cidr
}

var networkRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

// Ensure creates the network if needed (subnet = cidr's masked prefix) and
// connects the container with cidr's address, reconnecting it when it is
// on the network with another address.
func (d Docker) Ensure(ctx context.Context, container, cidr string) (Attachment, error) {
	if err := d.check(container); err != nil {
		return Attachment{}, err
	}
	want, err := parseCIDR(cidr)
	if err != nil {
		return Attachment{}, fmt.Errorf("docker attach %s: %w", container, err)
	}
	ip := want.Addr().String()
	if err := d.Engine.EnsureNetwork(ctx, d.Network, want.Masked().String()); err != nil {
		return Attachment{}, fmt.Errorf("docker attach %s: network %s: %w", container, d.Network, err)
	}
	have, ok, err := d.Engine.Connected(ctx, container, d.Network)
	if err != nil {
		return Attachment{}, fmt.Errorf("docker attach %s: %w", container, err)
	}
	if ok && have == ip {
		return Attachment{Address: want.String(), Attached: true, Addresses: []string{want.String()}}, nil
	}
	if ok {
		if err := d.Engine.Disconnect(ctx, d.Network, container); err != nil {
			return Attachment{}, fmt.Errorf("docker attach %s: disconnect from %s (has %s, want %s): %w", container, d.Network, have, ip, err)
		}
	}
	if err := d.Engine.Connect(ctx, d.Network, container, ip); err != nil {
		return Attachment{}, fmt.Errorf("docker attach %s: connect to %s with %s: %w", container, d.Network, ip, err)
	}
	have, ok, err = d.Engine.Connected(ctx, container, d.Network)
	if err != nil {
		return Attachment{}, fmt.Errorf("docker attach %s: verify: %w", container, err)
	}
	if !ok || have != ip {
		return Attachment{}, fmt.Errorf("docker attach %s: after connect the address on %s is %q, want %s", container, d.Network, have, ip)
	}
	return Attachment{Address: want.String(), Attached: true, Addresses: []string{want.String()}}, nil
}

// Check reports the container's address on the network. The prefix length
// is not known to the engine adapter, so Address is the bare IP here.
func (d Docker) Check(ctx context.Context, container string) (Attachment, error) {
	if err := d.check(container); err != nil {
		return Attachment{}, err
	}
	ip, ok, err := d.Engine.Connected(ctx, container, d.Network)
	if err != nil {
		return Attachment{}, fmt.Errorf("docker check %s: %w", container, err)
	}
	if !ok || ip == "" {
		return Attachment{}, nil
	}
	return Attachment{Address: ip, Attached: true, Addresses: []string{ip}}, nil
}

func (d Docker) check(container string) error {
	if d.Engine == nil {
		return fmt.Errorf("docker attach %s: no engine configured", container)
	}
	if !networkRE.MatchString(d.Network) {
		return fmt.Errorf("docker attach %s: invalid network name %q", container, d.Network)
	}
	return checkContainer(container)
}
