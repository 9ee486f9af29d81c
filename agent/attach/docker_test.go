package attach

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/engine/enginetest"
)

// cliNetworks adapts the docker CLI to DockerNetworks, so the driver is
// tested against the real engine (the agent adapts the Docker client).
type cliNetworks struct{}

func (cliNetworks) docker(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

func (c cliNetworks) EnsureNetwork(ctx context.Context, network, subnet string) error {
	have, err := c.docker(ctx, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", network)
	if err == nil {
		if have != subnet {
			return fmt.Errorf("network %s has subnet %s, want %s", network, have, subnet)
		}
		return nil
	}
	_, err = c.docker(ctx, "network", "create", "--subnet", subnet, network)
	return err
}

func (c cliNetworks) Connected(ctx context.Context, container, network string) (string, bool, error) {
	out, err := c.docker(ctx, "inspect", "-f", `{{with index .NetworkSettings.Networks "`+network+`"}}{{.IPAddress}}|{{.IPAMConfig}}{{end}}`, container)
	if err != nil {
		if strings.Contains(err.Error(), "No such") {
			return "", false, fmt.Errorf("%s: %w", err, ErrNotRunning)
		}
		return "", false, err
	}
	if out == "" {
		return "", false, nil
	}
	ip, _, _ := strings.Cut(out, "|")
	if ip == "" {
		// Connected but stopped: the configured address is in IPAMConfig.
		cfg, err := c.docker(ctx, "inspect", "-f", `{{with index .NetworkSettings.Networks "`+network+`"}}{{with .IPAMConfig}}{{.IPv4Address}}{{end}}{{end}}`, container)
		return cfg, cfg != "", err
	}
	return ip, true, nil
}

func (c cliNetworks) Connect(ctx context.Context, network, container, ip string) error {
	_, err := c.docker(ctx, "network", "connect", "--ip", ip, network, container)
	return err
}

func (c cliNetworks) Disconnect(ctx context.Context, network, container string) error {
	_, err := c.docker(ctx, "network", "disconnect", network, container)
	return err
}

func TestDockerDriverRealEngine(t *testing.T) {
	enginetest.RequireDocker(t)
	ctx := context.Background()
	network := fmt.Sprintf("pullship-test-%d", time.Now().UnixNano())
	t.Cleanup(func() { exec.Command("docker", "network", "rm", network).Run() })
	c := startContainer(t)
	d := Docker{Engine: cliNetworks{}, Network: network}

	if a, err := d.Check(ctx, c); err != nil || a.Attached {
		t.Fatalf("check before: %+v, %v", a, err)
	}
	a, err := d.Ensure(ctx, c, "10.231.7.10/24")
	if err != nil || !a.Attached || a.Address != "10.231.7.10/24" {
		t.Fatalf("ensure: %+v, %v", a, err)
	}
	// Unlike weave, the address survives a restart.
	docker(t, "restart", "-t", "1", c)
	if a, err := d.Check(ctx, c); err != nil || !a.Attached || a.Address != "10.231.7.10" {
		t.Fatalf("check after restart: %+v, %v", a, err)
	}
	// A new address replaces the old one.
	if a, err := d.Ensure(ctx, c, "10.231.7.11/24"); err != nil || a.Address != "10.231.7.11/24" {
		t.Fatalf("ensure new address: %+v, %v", a, err)
	}
	if a, err := d.Check(ctx, c); err != nil || a.Address != "10.231.7.11" {
		t.Fatalf("check new address: %+v, %v", a, err)
	}
	// A cidr outside the network's subnet is refused by the adapter.
	if _, err := d.Ensure(ctx, c, "10.232.0.1/24"); err == nil || !strings.Contains(err.Error(), "subnet") {
		t.Fatalf("other subnet: %v", err)
	}
	if _, err := d.Ensure(ctx, "pullship-no-such-container", "10.231.7.12/24"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("missing container: %v, want ErrNotRunning", err)
	}
}

// fakeNetworks is an in-memory DockerNetworks recording calls.
type fakeNetworks struct {
	ip         map[string]string // container → ip on the network
	connectErr error
	calls      []string
}

func (f *fakeNetworks) EnsureNetwork(_ context.Context, network, subnet string) error {
	f.calls = append(f.calls, "network "+network+" "+subnet)
	return nil
}

func (f *fakeNetworks) Connected(_ context.Context, container, _ string) (string, bool, error) {
	ip, ok := f.ip[container]
	return ip, ok, nil
}

func (f *fakeNetworks) Connect(_ context.Context, _, container, ip string) error {
	f.calls = append(f.calls, "connect "+container+" "+ip)
	if f.connectErr != nil {
		return f.connectErr
	}
	f.ip[container] = ip
	return nil
}

func (f *fakeNetworks) Disconnect(_ context.Context, _, container string) error {
	f.calls = append(f.calls, "disconnect "+container)
	delete(f.ip, container)
	return nil
}

func TestDockerDriverCalls(t *testing.T) {
	ctx := context.Background()
	f := &fakeNetworks{ip: map[string]string{}}
	d := Docker{Engine: f, Network: "pullship"}
	if _, err := d.Ensure(ctx, "c1", "10.0.0.1/24"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Ensure(ctx, "c1", "10.0.0.1/24"); err != nil {
		t.Fatal(err)
	}
	want := "network pullship 10.0.0.0/24,connect c1 10.0.0.1,network pullship 10.0.0.0/24"
	if got := strings.Join(f.calls, ","); got != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
	f.connectErr = errors.New("address already in use")
	f.ip["c1"] = "10.0.0.9"
	if _, err := d.Ensure(ctx, "c1", "10.0.0.1/24"); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("connect failure: %v", err)
	}
	if _, err := (Docker{Engine: f, Network: "-x"}).Ensure(ctx, "c1", "10.0.0.1/24"); err == nil {
		t.Fatal("invalid network name accepted")
	}
	if _, err := (Docker{Network: "pullship"}).Check(ctx, "c1"); err == nil {
		t.Fatal("nil engine accepted")
	}
}

func TestNone(t *testing.T) {
	a, err := None{}.Ensure(context.Background(), "c1", "10.0.0.1/24")
	if err != nil || !a.Attached || a.Address != "10.0.0.1/24" {
		t.Fatalf("ensure: %+v, %v", a, err)
	}
	if a, err := (None{}).Check(context.Background(), "c1"); err != nil || !a.Attached {
		t.Fatalf("check: %+v, %v", a, err)
	}
	if _, err := (None{}).Ensure(context.Background(), "c1", "bogus"); err == nil {
		t.Fatal("bad cidr accepted")
	}
	var _ Driver = None{}
	var _ Driver = Weave{}
	var _ Driver = Docker{}
}
