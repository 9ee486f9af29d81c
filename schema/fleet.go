package schema

import (
	"fmt"

	"net/netip"
	"path"
	"strings"
	"time"

	"filippo.io/age"
)

// Fleet is fleet.toml: the bundler's input, kept in the user's config
// repository next to the config templates it names. Strings marked
// "template" are Go text/template text rendered per node by bundler/render;
// everything else is literal. See docs/format.md.
type Fleet struct {
	// Service is the single [service] table of a one-service fleet. A
	// fleet lists either it or [[service]] tables; Services holds the
	// fleet's services in both forms once ParseFleet returns.
	Service Service `toml:"service"`
	// Services are the [[service]] tables in fleet order (nil in the
	// [service] form); see [Fleet.All] for the services of either form.
	Services []Service `toml:"-"`
	// Multi says the fleet used [[service]] tables: its releases list every
	// node's services by name ([[node.service]]). A [service] fleet keeps
	// the one-container manifest form.
	Multi bool `toml:"-"`
	// Compose names a compose file (relative to fleet.toml) listing the
	// services instead of [service] or [[service]]; bundler/render reads it
	// (see render.ParseFleet) and sets Services.
	Compose   string         `toml:"compose,omitempty"`
	listed    bool           // fleet.toml has a [service] or [[service]] table
	Templates []Template     `toml:"template"`
	Vars      map[string]any `toml:"vars"`   // shared template variables
	Attach    Attach         `toml:"attach"` // default attachment of every node
	Nodes     []FleetNode    `toml:"node"`
	Rollout   FleetRollout   `toml:"rollout"`
	Secrets   FleetSecrets   `toml:"secrets"`
}

// FleetSecrets configures node secrets (docs/secrets.md).
type FleetSecrets struct {
	// Recipients are the age X25519 recipients ("age1…") of the operators
	// and CI jobs that cut releases: every secret value in secrets/<node>.toml
	// is encrypted to them besides the node, so that any one of them can
	// render the node's templates.
	Recipients []string `toml:"recipients,omitempty"`
}

// Service is one container every node (or every node naming it) runs.
type Service struct {
	// Name names the service in a [[service]] fleet; unique, and empty in
	// the [service] form.
	Name string `toml:"name,omitempty"`
	// DependsOn names the services started before this one ([[service]]
	// only); a cycle is an error.
	DependsOn []string `toml:"depends_on,omitempty"`
	// Attach says the node's overlay address is attached to this service's
	// container ([[service]] only; one service of a node at most). When no
	// service of a node sets it, the node's first service is attached.
	Attach *bool `toml:"attach,omitempty"`
	// Image is the Docker reference the bundler packs ("airdroid/vernemq:1.6.1").
	Image string `toml:"image"`
	// ImageName names the image inside the release (images/<name>.toml);
	// empty means derived from Image, see ReleaseImageName.
	ImageName string `toml:"image_name,omitempty"`
	// Container is the container name (template), e.g. "vernemq-release-{{.Node}}-1".
	Container  string            `toml:"container"`
	Ports      []string          `toml:"ports,omitempty"` // "[ip:]host:container[/proto]"
	Binds      []string          `toml:"binds,omitempty"` // "source:target[:ro|rw]"; templates (per node)
	Env        map[string]string `toml:"env,omitempty"`
	Restart    string            `toml:"restart,omitempty"` // Docker restart policy; default unless-stopped
	Command    []string          `toml:"command,omitempty"`
	Entrypoint []string          `toml:"entrypoint,omitempty"`
	Reload     Reload            `toml:"reload"`
	Health     Health            `toml:"health"`
	Cluster    *FleetCluster     `toml:"cluster,omitempty"`
	// Network is the user-defined Docker network (template, per node) the
	// container is created on; the agent creates it when it is missing.
	// Containers on one network reach each other by container name, so
	// the services of a node given the same network talk to each other
	// without the host's ports, and nodes sharing a host each keep theirs.
	// Empty: the engine's default bridge. The overlay attachment is apart
	// from it (see Attach).
	Network string `toml:"network,omitempty"`
}

// Reload says how a node picks up changed files when its image did not change.
type Reload struct {
	Action  string   `toml:"action"`            // ReloadExec, ReloadRestart or ReloadNone
	Command []string `toml:"command,omitempty"` // argv run in the container, for exec only
}

// Health is the health check run in the container after every apply. An
// empty Command means no check. The check passes when Command exits 0 and its
// output contains Expect, within Timeout, trying 1+Retries times Interval apart.
type Health struct {
	Command  []string `toml:"command,omitempty"`
	Expect   string   `toml:"expect,omitempty"`
	Timeout  Duration `toml:"timeout,omitempty"`
	Retries  int      `toml:"retries,omitempty"`
	Interval Duration `toml:"interval,omitempty"`
}

// FleetCluster describes how nodes see and join the service's cluster.
type FleetCluster struct {
	Show   []string `toml:"show"`   // argv printing the cluster view
	Format string   `toml:"format"` // ClusterVMQTable or ClusterVMQJSON
	// Join is the argv to join through one peer; each argument is a template
	// that sees .Peer (the peer's member name) besides the node's own data.
	Join []string `toml:"join"`
	// Peer is a node's member name in the cluster view (template), e.g.
	// "VerneMQ@{{.Address}}".
	Peer string `toml:"peer"`
}

// Template is a config file rendered for every node.
type Template struct {
	Name   string   `toml:"name"`           // unique; also the file's name in nodes/<node>/
	Source string   `toml:"source"`         // template file, relative to fleet.toml
	Target string   `toml:"target"`         // absolute path on the host; a template (per node)
	Mode   FileMode `toml:"mode,omitempty"` // default 0644
	// Service names the [[service]] whose reload a change of this file
	// triggers; nodes not running it do not get the file. Required when the
	// fleet has more than one service.
	Service string `toml:"service,omitempty"`
}

// Attach is a node's overlay-network attachment driver.
type Attach struct {
	Driver  string `toml:"driver"`            // DriverWeave, DriverDocker or DriverNone
	Network string `toml:"network,omitempty"` // Docker network, driver docker only
}

// FleetNode is one host's node.
type FleetNode struct {
	Name    string `toml:"name"`
	Region  string `toml:"region"`
	Wave    int    `toml:"wave"`    // rollout wave, 1 first
	Address string `toml:"address"` // overlay address with prefix, "10.0.0.1/24"
	// Container overrides Service.Container (template) for this node; the
	// [service] form only.
	Container string `toml:"container,omitempty"`
	// Services names the [[service]] tables this node runs; empty means all.
	Services []string       `toml:"services,omitempty"`
	Attach   *Attach        `toml:"attach,omitempty"` // overrides Fleet.Attach
	Vars     map[string]any `toml:"vars,omitempty"`   // override the shared vars
	// StatusKey is the node's status public key: a PEM block, or a path
	// relative to fleet.toml of a file holding one.
	StatusKey string `toml:"status_key"`
	// AgeRecipient is the node's age X25519 recipient ("age1…", printed by
	// pullship-agent init). Secrets, and the rendered files that use them,
	// are encrypted to it. Required only for nodes that use secrets.
	AgeRecipient string `toml:"age_recipient,omitempty"`
}

// FleetRollout holds the rollout and release settings.
type FleetRollout struct {
	// Soak is how long a wave must stay healthy before the next one starts.
	Soak Duration `toml:"soak,omitempty"`
	// Expires is how long a release stays valid after it is created; the
	// agent refuses an expired release. Default DefaultReleaseLifetime.
	Expires Duration `toml:"expires,omitempty"`
}

// Defaults the fleet falls back to.
const (
	DefaultRestart         = "unless-stopped"
	DefaultFileMode        = FileMode(0o644)
	DefaultReleaseLifetime = Duration(14 * 24 * time.Hour)
)

// MaxReleaseLifetime bounds FleetRollout.Expires.
const MaxReleaseLifetime = 366 * 24 * time.Hour

// ParseFleet decodes and validates fleet.toml (read from the file called
// name). Defaults are filled in: restart policy, file modes, release
// lifetime. It does not read template sources or key files.
func ParseFleet(name string, data []byte) (*Fleet, error) {
	f, err := decodeFleet(name, data)
	if err != nil {
		return nil, err
	}
	for _, s := range f.All() {
		if s.Restart == "" {
			s.Restart = DefaultRestart
		}
	}
	for i := range f.Templates {
		if f.Templates[i].Mode == 0 {
			f.Templates[i].Mode = DefaultFileMode
		}
	}
	if f.Rollout.Expires == 0 {
		f.Rollout.Expires = DefaultReleaseLifetime
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return f, nil
}

// ImageName is the image's name inside the release of the fleet's first
// service; see [Service.ReleaseImageName].
func (f *Fleet) ImageName() string {
	return f.All()[0].ReleaseImageName()
}

// ReleaseImageName is the service's image name inside the release:
// ImageName, or else the last path element of Image with its tag appended
// ("airdroid/vernemq:1.6.1" → "vernemq-1.6.1"), lowercased.
func (s *Service) ReleaseImageName() string {
	if s.ImageName != "" {
		return s.ImageName
	}
	ref, _, _ := strings.Cut(s.Image, "@")
	base := path.Base(ref)
	if repo, tag, ok := strings.Cut(base, ":"); ok {
		base = repo + "-" + tag
	}
	return strings.ToLower(base)
}

// AttachOf returns the attachment that applies to node n.
func (f *Fleet) AttachOf(n *FleetNode) Attach {
	if n.Attach != nil {
		return *n.Attach
	}
	return f.Attach
}

// Validate checks everything ParseFleet checks after decoding.
func (f *Fleet) Validate() error {
	if err := f.validateServices(); err != nil {
		return err
	}
	if len(f.Templates) > MaxFilesPerNode {
		return fmt.Errorf("%d templates, at most %d allowed", len(f.Templates), MaxFilesPerNode)
	}
	names, targets := map[string]bool{}, map[string]bool{}
	for _, t := range f.Templates {
		if err := CheckName(t.Name); err != nil {
			return fmt.Errorf("template: %w", err)
		}
		if names[t.Name] {
			return fmt.Errorf("template %q: defined twice", t.Name)
		}
		names[t.Name] = true
		if err := CheckRelPath(t.Source); err != nil {
			return fmt.Errorf("template %q: source: %w", t.Name, err)
		}
		if err := CheckAbsPath(t.Target); err != nil {
			return fmt.Errorf("template %q: target: %w", t.Name, err)
		}
		if targets[t.Target] {
			return fmt.Errorf("template %q: target %q used twice", t.Name, t.Target)
		}
		targets[t.Target] = true
		if t.Mode&0o400 == 0 {
			return fmt.Errorf("template %q: mode %04o: owner cannot read the file", t.Name, uint32(t.Mode))
		}
	}
	if err := checkVars("vars", f.Vars); err != nil {
		return err
	}
	if err := checkAttach(f.Attach.Driver, f.Attach.Network); err != nil && (f.Attach != Attach{}) {
		return err
	}

	if len(f.Nodes) == 0 {
		return fmt.Errorf("no [[node]]")
	}
	if len(f.Nodes) > MaxNodes {
		return fmt.Errorf("%d nodes, at most %d allowed", len(f.Nodes), MaxNodes)
	}
	nodes, addrs := map[string]bool{}, map[netip.Addr]string{}
	for i := range f.Nodes {
		n := &f.Nodes[i]
		if err := CheckName(n.Name); err != nil {
			return fmt.Errorf("node %d: %w", i+1, err)
		}
		if nodes[n.Name] {
			return fmt.Errorf("node %q: defined twice", n.Name)
		}
		nodes[n.Name] = true
		if err := n.validate(f); err != nil {
			return fmt.Errorf("node %q: %w", n.Name, err)
		}
		p, _ := netip.ParsePrefix(n.Address)
		if other, dup := addrs[p.Addr()]; dup {
			return fmt.Errorf("node %q: address %s already used by node %q", n.Name, p.Addr(), other)
		}
		addrs[p.Addr()] = n.Name
	}
	if f.Rollout.Soak != 0 {
		if err := checkDuration("rollout: soak", f.Rollout.Soak, 0); err != nil {
			return err
		}
	}
	if len(f.Secrets.Recipients) > MaxListLen {
		return fmt.Errorf("secrets: recipients: %d entries, at most %d allowed", len(f.Secrets.Recipients), MaxListLen)
	}
	for _, r := range f.Secrets.Recipients {
		if err := CheckAgeRecipient(r); err != nil {
			return fmt.Errorf("secrets: recipients: %w", err)
		}
	}
	if d := f.Rollout.Expires.D(); d < time.Hour || d > MaxReleaseLifetime {
		return fmt.Errorf("rollout: expires %s: must be between 1h and %s", d, MaxReleaseLifetime)
	}
	return nil
}

func (n *FleetNode) validate(f *Fleet) error {
	if err := CheckName(n.Region); err != nil {
		return fmt.Errorf("region: %w", err)
	}
	if n.Wave < 1 || n.Wave > MaxWave {
		return fmt.Errorf("wave %d: must be 1-%d", n.Wave, MaxWave)
	}
	if err := checkCIDR(n.Address); err != nil {
		return err
	}
	a := f.AttachOf(n)
	if err := checkAttach(a.Driver, a.Network); err != nil {
		return err
	}
	if n.Container != "" {
		if err := checkTemplateText("container", n.Container); err != nil {
			return err
		}
	}
	if err := checkVars("vars", n.Vars); err != nil {
		return err
	}
	if n.StatusKey == "" {
		return fmt.Errorf("status_key: missing (PEM public key or a file holding one)")
	}
	if strings.HasPrefix(strings.TrimSpace(n.StatusKey), "-----BEGIN") {
		if _, err := StatusKeyID(n.StatusKey); err != nil {
			return fmt.Errorf("status_key: %w", err)
		}
	} else if err := CheckRelPath(n.StatusKey); err != nil {
		return fmt.Errorf("status_key: %w", err)
	}
	if n.AgeRecipient != "" {
		if err := CheckAgeRecipient(n.AgeRecipient); err != nil {
			return fmt.Errorf("age_recipient: %w", err)
		}
	}
	return nil
}

// validateService checks one service; what names it in errors ("service"
// or `service "NAME"`).
func (s *Service) validate(what string) error {
	if s.Image == "" || len(s.Image) > 255 || strings.ContainsAny(s.Image, " \t\r\n\x00") {
		return fmt.Errorf("%s: image %q: want a Docker image reference", what, s.Image)
	}
	if err := CheckName(s.ReleaseImageName()); err != nil {
		return fmt.Errorf("%s: image name (set image_name): %w", what, err)
	}
	if err := checkTemplateText(what+": container", s.Container); err != nil {
		return err
	}
	if err := checkContainerCommon(s.Ports, s.Binds, s.Env, s.Restart, s.Command, s.Entrypoint, s.Reload, s.Health); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.Network != "" {
		if err := checkTemplateText(what+": network", s.Network); err != nil {
			return err
		}
	}
	if c := s.Cluster; c != nil {
		if err := checkArgv(what+": cluster: show", c.Show, true); err != nil {
			return err
		}
		if err := checkClusterFormat(c.Format); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := checkArgv(what+": cluster: join", c.Join, true); err != nil {
			return err
		}
		peerSeen := false
		for i, a := range c.Join {
			if err := checkTemplateText(fmt.Sprintf("%s: cluster: join argument %d", what, i), a); err != nil {
				return err
			}
			peerSeen = peerSeen || strings.Contains(a, ".Peer")
		}
		if !peerSeen {
			return fmt.Errorf("%s: cluster: join must use {{.Peer}}", what)
		}
		if err := checkTemplateText(what+": cluster: peer", c.Peer); err != nil {
			return err
		}
	}
	return nil
}

// CheckAgeRecipient requires an age X25519 recipient ("age1…").
func CheckAgeRecipient(s string) error {
	if len(s) > 128 {
		return fmt.Errorf("%.20q…: not an age X25519 recipient (too long)", s)
	}
	if _, err := age.ParseX25519Recipient(s); err != nil {
		return fmt.Errorf("%q: not an age X25519 recipient (age1…): %w", s, err)
	}
	return nil
}

// checkCIDR requires an IPv4 or IPv6 address with prefix length whose
// address is a usable host address (not the network itself when the prefix
// leaves room for hosts).
func checkCIDR(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("address %q: want an address with prefix like 10.0.0.1/24", s)
	}
	a := p.Addr()
	if a.Zone() != "" || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		return fmt.Errorf("address %q: not a usable host address", s)
	}
	if p.String() != s {
		return fmt.Errorf("address %q: write it as %q", s, p.String())
	}
	if p.Bits() < a.BitLen()-1 && p.Masked().Addr() == a {
		return fmt.Errorf("address %q: is the network address of its prefix", s)
	}
	return nil
}

func checkTemplateText(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s: missing", what)
	}
	if err := checkString(what, s, MaxStringLen); err != nil {
		return err
	}
	return nil
}

// TemplateText is one string of a fleet that is rendered as a Go template,
// named as an error about it names it.
type TemplateText struct{ What, Text string }

// TemplateTexts lists the strings of f that are Go templates (the container
// names, networks and the cluster's join and peer arguments; config templates are
// files). Their syntax is bundler/render's to check (render.ParseFleet):
// schema holds no template code, so the agent, which imports schema, links
// none.
func (f *Fleet) TemplateTexts() []TemplateText {
	var out []TemplateText
	for _, s := range f.All() {
		what := f.serviceWhat(s)
		out = append(out, TemplateText{what + ": container", s.Container})
		if s.Network != "" {
			out = append(out, TemplateText{what + ": network", s.Network})
		}
		if c := s.Cluster; c != nil {
			for j, a := range c.Join {
				out = append(out, TemplateText{fmt.Sprintf("%s: cluster: join argument %d", what, j), a})
			}
			out = append(out, TemplateText{what + ": cluster: peer", c.Peer})
		}
	}
	for _, n := range f.Nodes {
		if n.Container != "" {
			out = append(out, TemplateText{fmt.Sprintf("node %q: container", n.Name), n.Container})
		}
	}
	return out
}

func checkContainerCommon(ports, binds []string, env map[string]string, restart string, command, entrypoint []string, reload Reload, health Health) error {
	if len(ports) > MaxListLen || len(binds) > MaxListLen {
		return fmt.Errorf("too many ports or binds (at most %d each)", MaxListLen)
	}
	seen := map[string]string{}
	for _, p := range ports {
		k, err := CheckPort(p)
		if err != nil {
			return err
		}
		if o, dup := seen[k]; dup {
			return fmt.Errorf("port %q: host port already used by %q", p, o)
		}
		seen[k] = p
	}
	seen = map[string]string{}
	for _, b := range binds {
		t, err := CheckBind(b)
		if err != nil {
			return err
		}
		if o, dup := seen[t]; dup {
			return fmt.Errorf("bind %q: target already used by %q", b, o)
		}
		seen[t] = b
	}
	if err := checkEnv(env); err != nil {
		return err
	}
	if err := checkRestart(restart); err != nil {
		return err
	}
	if err := checkArgv("command", command, false); err != nil {
		return err
	}
	if err := checkArgv("entrypoint", entrypoint, false); err != nil {
		return err
	}
	if err := checkReload(reload); err != nil {
		return err
	}
	return checkHealth(health)
}

// checkVars bounds template variables: identifier names, and values that
// are strings, numbers, booleans, datetimes, or arrays and tables of them.
func checkVars(what string, vars map[string]any) error {
	if len(vars) > MaxListLen*4 {
		return fmt.Errorf("%s: %d variables, at most %d allowed", what, len(vars), MaxListLen*4)
	}
	for k, v := range vars {
		if err := checkEnvName(k); err != nil {
			return fmt.Errorf("%s: variable %q: name must match [A-Za-z_][A-Za-z0-9_]*", what, k)
		}
		if err := checkVarValue(what+"."+k, v, 0); err != nil {
			return err
		}
	}
	return nil
}

func checkVarValue(what string, v any, depth int) error {
	if depth > 8 {
		return fmt.Errorf("%s: nested too deeply", what)
	}
	switch x := v.(type) {
	case string:
		return checkString(what, x, 64<<10)
	case []any:
		for i, e := range x {
			if err := checkVarValue(fmt.Sprintf("%s[%d]", what, i), e, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range x {
			if err := checkVarValue(what+"."+k, e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}
