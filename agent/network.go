package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pullship/pullship/agent/attach"
	"github.com/pullship/pullship/agent/cluster"
	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/schema"
)

// driver returns the attachment driver of a node.
func (a *Agent) driver(n schema.Network) attach.Driver {
	switch n.Driver {
	case schema.DriverWeave:
		return attach.Weave{Path: a.cfg.Weave}
	case schema.DriverDocker:
		return attach.Docker{Engine: dockerNetworks{a.eng}, Network: n.Network}
	}
	return attach.None{}
}

// dockerNetworks adapts the engine to the docker attachment driver.
type dockerNetworks struct{ eng engine.Engine }

func (d dockerNetworks) EnsureNetwork(ctx context.Context, network, subnet string) error {
	return d.eng.EnsureNetwork(ctx, network, subnet)
}

func (d dockerNetworks) Connected(ctx context.Context, container, network string) (string, bool, error) {
	return d.eng.Connected(ctx, container, network)
}

func (d dockerNetworks) Connect(ctx context.Context, network, container, ip string) error {
	return d.eng.ConnectNetwork(ctx, network, container, ip)
}

// Disconnect is a no-op: the engine's ConnectNetwork moves a container
// that holds another address itself.
func (d dockerNetworks) Disconnect(context.Context, string, string) error { return nil }

// attachedContainers returns the names of the node's containers that hold
// its overlay address (its attached services).
func attachedContainers(rn *schema.ReleaseNode) []string {
	var out []string
	for _, u := range rn.Units() {
		if u.Attach {
			out = append(out, u.Container.Name)
		}
	}
	return out
}

// ensureAttached makes the node's attached containers hold its overlay
// address; it returns the first one's attachment.
func (a *Agent) ensureAttached(ctx context.Context, rn *schema.ReleaseNode) (attach.Attachment, error) {
	var first attach.Attachment
	var errs []error
	for i, name := range attachedContainers(rn) {
		at, err := a.ensureAttachedTo(ctx, rn, name)
		if i == 0 {
			first = at
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return first, errors.Join(errs...)
}

// ensureAttachedTo makes container name hold the node's overlay address.
func (a *Agent) ensureAttachedTo(ctx context.Context, rn *schema.ReleaseNode, name string) (attach.Attachment, error) {
	if rn.Network.Driver == schema.DriverNone || rn.Network.Driver == "" {
		return attach.Attachment{Attached: true}, nil
	}
	d := a.driver(rn.Network)
	cur, err := d.Check(ctx, name)
	if err == nil && hasAddress(cur, rn.Network.Address) {
		return cur, nil
	}
	got, err := d.Ensure(ctx, name, rn.Network.Address)
	if err != nil {
		return got, fmt.Errorf("attach %s to %s: %w", rn.Network.Address, name, err)
	}
	a.metrics.Reattachments.WithLabelValues(rn.Name).Inc()
	a.log.Info("network address attached", "node", rn.Name, "container", name, "address", rn.Network.Address, "driver", rn.Network.Driver)
	return got, nil
}

// hasAddress reports whether the attachment holds cidr's address (drivers
// report "10.0.0.1/24" or the bare "10.0.0.1").
func hasAddress(at attach.Attachment, cidr string) bool {
	ip, _, _ := strings.Cut(cidr, "/")
	for _, s := range append([]string{at.Address}, at.Addresses...) {
		if s == cidr || s == ip {
			return true
		}
	}
	return false
}

// execRunner runs cluster commands inside a node's container.
type execRunner struct {
	eng  engine.Engine
	name string
}

func (r execRunner) Exec(ctx context.Context, argv []string, timeout time.Duration) ([]byte, int, error) {
	res, err := r.eng.Exec(ctx, r.name, argv, timeout)
	return res.Output, res.ExitCode, err
}

func clusterSpec(c *schema.Cluster) cluster.Spec {
	return cluster.Spec{Show: c.Show, Format: c.Format, Join: c.Join, Self: c.Self}
}

// clusterView reads the node's cluster view from its clustered service.
func (a *Agent) clusterView(ctx context.Context, rn *schema.ReleaseNode) (cluster.View, error) {
	u, ok := rn.Clustered()
	if !ok {
		return cluster.View{}, nil
	}
	return cluster.Check(ctx, execRunner{a.eng, u.Container.Name}, clusterSpec(u.Container.Cluster))
}

// ensureCluster joins the node to its cluster when it is not a member.
func (a *Agent) ensureCluster(ctx context.Context, rn *schema.ReleaseNode) (cluster.View, error) {
	u, ok := rn.Clustered()
	if !ok {
		return cluster.View{}, nil
	}
	c := u.Container.Cluster
	r := execRunner{a.eng, u.Container.Name}
	v, err := cluster.Check(ctx, r, clusterSpec(c))
	if err == nil && (v.Joined || len(c.Join) == 0) {
		return v, nil
	}
	v, err = cluster.Ensure(ctx, r, clusterSpec(c), a.joinBackoff)
	if err != nil {
		return v, fmt.Errorf("cluster: %w", err)
	}
	a.log.Info("joined the cluster", "node", rn.Name, "members", len(v.Members))
	return v, nil
}

// managed tracks the nodes' current release entries for the watcher.
type managed struct {
	mu    sync.Mutex
	nodes map[string]*schema.ReleaseNode // by the name of each of its containers
}

func (m *managed) set(rn *schema.ReleaseNode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nodes == nil {
		m.nodes = map[string]*schema.ReleaseNode{}
	}
	for name, old := range m.nodes {
		if old.Name == rn.Name {
			delete(m.nodes, name) // its containers may have been renamed
		}
	}
	for _, u := range rn.Units() {
		m.nodes[u.Container.Name] = rn
	}
}

func (m *managed) get(container string) *schema.ReleaseNode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodes[container]
}

func (m *managed) all() []*schema.ReleaseNode {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*schema.ReleaseNode, 0, len(m.nodes))
	for _, rn := range m.nodes {
		if !slices.Contains(out, rn) {
			out = append(out, rn)
		}
	}
	return out
}

// loadManaged fills the watcher's table with the release each node runs
// (after a rollback, the one rolled back to).
func (a *Agent) loadManaged() {
	st, err := a.st.Load()
	if err != nil {
		return
	}
	for _, n := range a.cfg.Nodes {
		if r, ok := a.current(n.Name, st.Nodes[n.Name]); ok {
			a.managed.set(r.node)
		}
	}
}

// Watch re-attaches a node's address within a second of every start of its
// container (restart policy restarts and engine restarts included): weave
// forgets an address attached by hand whenever the container restarts. It
// reconciles every node when it (re)subscribes, since events in a gap are
// lost, and reopens the event stream when it breaks. It returns when ctx
// ends.
func (a *Agent) Watch(ctx context.Context) {
	a.loadManaged()
	for ctx.Err() == nil {
		evs, errs := a.eng.Events(ctx)
		for _, rn := range a.managed.all() {
			for _, name := range attachedContainers(rn) {
				a.reattach(ctx, rn, name)
			}
		}
	stream:
		for {
			select {
			case ev, ok := <-evs:
				if !ok {
					break stream
				}
				if ev.Action != "start" {
					continue
				}
				if rn := a.managed.get(ev.Name); rn != nil {
					a.reattach(ctx, rn, ev.Name)
				}
			case err := <-errs:
				if ctx.Err() == nil {
					a.log.Warn("docker event stream broke; reopening", "err", err)
				}
				break stream
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) reattach(ctx context.Context, rn *schema.ReleaseNode, name string) {
	if rn.Network.Driver == schema.DriverNone || rn.Network.Driver == "" {
		return
	}
	if !slices.Contains(attachedContainers(rn), name) {
		return
	}
	cs, found, err := a.eng.Inspect(ctx, name)
	if err != nil || !found || !cs.Running {
		return
	}
	if _, err := a.ensureAttachedTo(ctx, rn, name); err != nil {
		a.log.Error("re-attach failed", "node", rn.Name, "err", err)
	}
}
