package schema

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Release is release.toml, the signed manifest. Its exact bytes are what
// release.toml.sig signs. Everything the agent needs is literal here: the
// agent never renders templates. See docs/format.md.
type Release struct {
	Version     int64          `toml:"version"` // strictly increasing, 1 first
	Created     time.Time      `toml:"created"`
	Expires     time.Time      `toml:"expires"`            // after Created
	Previous    string         `toml:"previous,omitempty"` // sha256 hex of the previous release.toml; empty only for version 1
	RootVersion int64          `toml:"root_version"`       // root-N.toml whose keys sign this release
	Source      *Source        `toml:"source,omitempty"`
	Images      []ReleaseImage `toml:"image"`
	Nodes       []ReleaseNode  `toml:"node"`
	Rollout     Rollout        `toml:"rollout"`
}

// Source records the fleet repository commit the release was made from.
type Source struct {
	Commit string `toml:"commit"`          // 40-hex git commit id
	Dirty  bool   `toml:"dirty,omitempty"` // the work tree had uncommitted changes
}

// ReleaseImage pins one image and its index file images/<Name>.toml.
type ReleaseImage struct {
	Name        string `toml:"name"`
	Reference   string `toml:"reference,omitempty"` // Docker reference to tag after loading
	Digest      string `toml:"digest"`              // "sha256:<hex>": the image ID (config digest)
	IndexSHA256 string `toml:"index_sha256"`        // sha256 hex of images/<Name>.toml
	IndexLength int64  `toml:"index_length"`        // its length in bytes
}

// ReleaseNode is everything one node applies.
type ReleaseNode struct {
	Name   string `toml:"name"`
	Region string `toml:"region"`
	Wave   int    `toml:"wave"`
	// Image (a ReleaseImage name) and Container are the node's one
	// container in the one-service form; a node of a [[service]] fleet
	// lists Services instead and leaves both empty. See [ReleaseNode.Units].
	Image       string `toml:"image,omitempty"`
	StatusKeyID string `toml:"status_keyid"` // key id of StatusKey
	StatusKey   string `toml:"status_key"`   // PEM public key verifying the node's status.toml.sig
	// AgeRecipient is the node's age recipient its encrypted files are
	// encrypted to; set when the fleet names one (docs/secrets.md).
	AgeRecipient string     `toml:"age_recipient,omitempty"`
	Container    *Container `toml:"container,omitempty"`
	Network      Network    `toml:"network"`
	Files        []File     `toml:"file"`
	// Services are the node's containers in start order (every service's
	// DependsOn earlier in the list), applied and rolled back as one unit.
	Services []NodeService `toml:"service,omitempty"`
}

// NodeService is one service of a node: a container of a release image.
type NodeService struct {
	Name  string `toml:"name"`
	Image string `toml:"image"` // a ReleaseImage name
	// DependsOn names services listed before this one that start first.
	DependsOn []string `toml:"depends_on,omitempty"`
	// Attach says the node's overlay address is attached to this container.
	Attach    bool      `toml:"attach,omitempty"`
	Container Container `toml:"container"`
}

// Units returns the node's services in start order. A one-service node
// (Image and Container set) is one unnamed, attached service.
func (n *ReleaseNode) Units() []NodeService {
	if len(n.Services) > 0 {
		return n.Services
	}
	if n.Container == nil {
		return nil
	}
	return []NodeService{{Image: n.Image, Attach: true, Container: *n.Container}}
}

// Clustered returns the node's service with a cluster spec, if any.
func (n *ReleaseNode) Clustered() (*NodeService, bool) {
	u := n.Units()
	for i := range u {
		if u[i].Container.Cluster != nil {
			return &u[i], true
		}
	}
	return nil, false
}

// Container is the literal container spec of one node.
type Container struct {
	Name       string            `toml:"name"`
	Ports      []string          `toml:"ports,omitempty"`
	Binds      []string          `toml:"binds,omitempty"`
	Env        map[string]string `toml:"env,omitempty"`
	Restart    string            `toml:"restart"`
	Command    []string          `toml:"command,omitempty"`
	Entrypoint []string          `toml:"entrypoint,omitempty"`
	Reload     Reload            `toml:"reload"`
	Health     Health            `toml:"health"`
	Cluster    *Cluster          `toml:"cluster,omitempty"`
	// Network is the user-defined Docker network the container is created
	// on (see [CheckServiceNetwork]); empty: the engine's default bridge.
	Network string `toml:"network,omitempty"`
}

// Cluster is a node's literal cluster membership spec.
type Cluster struct {
	Show   []string `toml:"show"`
	Format string   `toml:"format"`
	Self   string   `toml:"self"`            // this node's member name
	Peers  []string `toml:"peers,omitempty"` // other nodes' member names, in order of preference
	// Join holds one argv per entry of Peers (same order): the command
	// joining the cluster through that peer.
	Join [][]string `toml:"join,omitempty"`
}

// Network is a node's overlay attachment.
type Network struct {
	Driver  string `toml:"driver"`
	Address string `toml:"address,omitempty"` // CIDR, e.g. "10.0.0.1/24"; empty for driver none
	Network string `toml:"network,omitempty"` // Docker network, driver docker only
}

// File is one rendered file: stored at nodes/<node>/<Path> in the release
// tree and written to Target on the host.
type File struct {
	Path   string   `toml:"path"`   // relative, inside nodes/<node>/
	Target string   `toml:"target"` // absolute host path
	SHA256 string   `toml:"sha256"` // hex
	Length int64    `toml:"length"` // bytes, at most MaxFileLength
	Mode   FileMode `toml:"mode"`
	// Encrypted marks a file that used node secrets: the release holds it
	// age-encrypted to the node's AgeRecipient, SHA256 and Length pin that
	// ciphertext, and the agent writes the decrypted plaintext to Target.
	Encrypted bool `toml:"encrypted,omitempty"`
	// Service names the node's service whose reload a change of this file
	// triggers: set exactly when the node lists Services.
	Service string `toml:"service,omitempty"`
}

// Rollout controls wave gating.
type Rollout struct {
	Soak Duration `toml:"soak,omitempty"` // healthy time before the next wave
	Now  []string `toml:"now,omitempty"`  // nodes exempt from wave gating
}

// ParseRelease decodes and validates release.toml (read from the file called name).
func ParseRelease(name string, data []byte) (*Release, error) {
	var r Release
	if err := DecodeStrict(name, data, &r); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &r, nil
}

// Node returns the entry of the node called name.
func (r *Release) Node(name string) (*ReleaseNode, bool) {
	for i := range r.Nodes {
		if r.Nodes[i].Name == name {
			return &r.Nodes[i], true
		}
	}
	return nil, false
}

// ImageByName returns the image called name.
func (r *Release) ImageByName(name string) (*ReleaseImage, bool) {
	for i := range r.Images {
		if r.Images[i].Name == name {
			return &r.Images[i], true
		}
	}
	return nil, false
}

// Encode validates r and returns its canonical TOML bytes: the same Release
// always encodes to the same bytes, and ParseRelease of them yields a
// Release equal to r.
func (r *Release) Encode() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encode release %d: %w", r.Version, err)
	}
	return encodeTOML(r)
}

func encodeTOML(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Validate checks everything ParseRelease checks after decoding.
func (r *Release) Validate() error {
	if r.Version < 1 {
		return fmt.Errorf("version %d: must be at least 1", r.Version)
	}
	if err := checkUTC("created", r.Created); err != nil {
		return err
	}
	if err := checkUTC("expires", r.Expires); err != nil {
		return err
	}
	if !r.Expires.After(r.Created) {
		return fmt.Errorf("expires %s is not after created %s", r.Expires.Format(time.RFC3339), r.Created.Format(time.RFC3339))
	}
	switch {
	case r.Version == 1 && r.Previous == "":
	case r.Version == 1 && r.RootVersion < 2:
		// Only a version reset (release --reset-version, which needs a new
		// root) is a version 1 with a previous release.
		return fmt.Errorf("previous: must be empty for version 1 under root 1 (a version reset needs a newer root)")
	case r.Version == 1:
		if err := checkHex64("previous", r.Previous); err != nil {
			return fmt.Errorf("%w (sha256 of the release.toml a version reset follows)", err)
		}
	default:
		if err := checkHex64("previous", r.Previous); err != nil {
			return fmt.Errorf("%w (sha256 of release.toml of version %d)", err, r.Version-1)
		}
	}
	if r.RootVersion < 1 {
		return fmt.Errorf("root_version %d: must be at least 1", r.RootVersion)
	}
	if r.Source != nil {
		if err := checkHex40("source: commit", r.Source.Commit); err != nil {
			return err
		}
	}
	if len(r.Images) == 0 {
		return fmt.Errorf("no [[image]]")
	}
	if len(r.Images) > MaxImages {
		return fmt.Errorf("%d images, at most %d allowed", len(r.Images), MaxImages)
	}
	images := map[string]bool{}
	for _, im := range r.Images {
		if err := CheckName(im.Name); err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if images[im.Name] {
			return fmt.Errorf("image %q: listed twice", im.Name)
		}
		images[im.Name] = true
		if err := checkString("image "+im.Name+": reference", im.Reference, 255); err != nil {
			return err
		}
		if err := checkDigest("image "+im.Name+": digest", im.Digest); err != nil {
			return err
		}
		if err := checkHex64("image "+im.Name+": index_sha256", im.IndexSHA256); err != nil {
			return err
		}
		if im.IndexLength < 1 || im.IndexLength > MaxFileSize {
			return fmt.Errorf("image %q: index_length %d: must be 1-%d", im.Name, im.IndexLength, MaxFileSize)
		}
	}
	if len(r.Nodes) == 0 {
		return fmt.Errorf("no [[node]]")
	}
	if len(r.Nodes) > MaxNodes {
		return fmt.Errorf("%d nodes, at most %d allowed", len(r.Nodes), MaxNodes)
	}
	nodes := map[string]bool{}
	addrs := map[netip.Addr]string{}
	for i := range r.Nodes {
		n := &r.Nodes[i]
		if err := CheckName(n.Name); err != nil {
			return fmt.Errorf("node %d: %w", i+1, err)
		}
		if nodes[n.Name] {
			return fmt.Errorf("node %q: listed twice", n.Name)
		}
		nodes[n.Name] = true
		if err := n.validateServices(images); err != nil {
			return fmt.Errorf("node %q: %w", n.Name, err)
		}
		if err := n.validate(); err != nil {
			return fmt.Errorf("node %q: %w", n.Name, err)
		}
		if n.Network.Address != "" {
			p, _ := netip.ParsePrefix(n.Network.Address)
			if other, dup := addrs[p.Addr()]; dup {
				return fmt.Errorf("node %q: address %s already used by node %q", n.Name, p.Addr(), other)
			}
			addrs[p.Addr()] = n.Name
		}
	}
	if r.Rollout.Soak != 0 {
		if err := checkDuration("rollout: soak", r.Rollout.Soak, 0); err != nil {
			return err
		}
	}
	if len(r.Rollout.Now) > MaxNodes {
		return fmt.Errorf("rollout: now: %d entries, at most %d allowed", len(r.Rollout.Now), MaxNodes)
	}
	now := map[string]bool{}
	for _, n := range r.Rollout.Now {
		if !nodes[n] {
			return fmt.Errorf("rollout: now: node %q is not in [[node]]", n)
		}
		if now[n] {
			return fmt.Errorf("rollout: now: node %q listed twice", n)
		}
		now[n] = true
	}
	return nil
}

func (n *ReleaseNode) validate() error {
	if err := CheckName(n.Region); err != nil {
		return fmt.Errorf("region: %w", err)
	}
	if n.Wave < 1 || n.Wave > MaxWave {
		return fmt.Errorf("wave %d: must be 1-%d", n.Wave, MaxWave)
	}
	id, err := StatusKeyID(n.StatusKey)
	if err != nil {
		return fmt.Errorf("status_key: %w", err)
	}
	if n.StatusKeyID != id {
		return fmt.Errorf("status_keyid %q does not match status_key (key id %s)", n.StatusKeyID, id)
	}
	if err := checkAttach(n.Network.Driver, n.Network.Network); err != nil {
		return err
	}
	for _, u := range n.Units() {
		// The overlay network holds each node's fixed address, given by the
		// attachment; a container created on it would take any address.
		if u.Container.Network != "" && n.Network.Driver == DriverDocker && u.Container.Network == n.Network.Network {
			return fmt.Errorf("container %s: network %q is the node's overlay network (attach.network): the attached service joins it with the node's address", u.Container.Name, u.Container.Network)
		}
	}
	if n.Network.Driver == DriverNone {
		if n.Network.Address != "" {
			if err := checkCIDR(n.Network.Address); err != nil {
				return fmt.Errorf("network: %w", err)
			}
		}
	} else if err := checkCIDR(n.Network.Address); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if len(n.Files) > MaxFilesPerNode {
		return fmt.Errorf("%d files, at most %d allowed", len(n.Files), MaxFilesPerNode)
	}
	paths, targets := map[string]bool{}, map[string]bool{}
	for _, f := range n.Files {
		if err := CheckRelPath(f.Path); err != nil {
			return fmt.Errorf("file: path: %w", err)
		}
		if paths[f.Path] {
			return fmt.Errorf("file %q: listed twice", f.Path)
		}
		paths[f.Path] = true
		if err := CheckAbsPath(f.Target); err != nil {
			return fmt.Errorf("file %q: target: %w", f.Path, err)
		}
		if targets[f.Target] {
			return fmt.Errorf("file %q: target %q used twice", f.Path, f.Target)
		}
		for t := range targets {
			if strings.HasPrefix(t, f.Target+"/") || strings.HasPrefix(f.Target, t+"/") {
				return fmt.Errorf("file %q: target %q and %q: one is inside the other", f.Path, f.Target, t)
			}
		}
		targets[f.Target] = true
		if err := checkHex64("file "+f.Path+": sha256", f.SHA256); err != nil {
			return err
		}
		if f.Length < 0 || f.Length > MaxFileLength {
			return fmt.Errorf("file %q: length %d: must be 0-%d", f.Path, f.Length, MaxFileLength)
		}
		if f.Mode&0o400 == 0 || f.Mode > 0o777 {
			return fmt.Errorf("file %q: mode %04o: must be readable by its owner, at most 0777", f.Path, uint32(f.Mode))
		}
		if f.Encrypted {
			if n.AgeRecipient == "" {
				return fmt.Errorf("file %q: encrypted, but the node has no age_recipient", f.Path)
			}
			if f.Length == 0 {
				return fmt.Errorf("file %q: encrypted, but empty (an age file never is)", f.Path)
			}
		}
	}
	if n.AgeRecipient != "" {
		if err := CheckAgeRecipient(n.AgeRecipient); err != nil {
			return fmt.Errorf("age_recipient: %w", err)
		}
	}
	return nil
}

// validateServices checks the node's containers in either form, and that
// every file names a service of the node exactly when it lists Services.
func (n *ReleaseNode) validateServices(images map[string]bool) error {
	if len(n.Services) == 0 {
		if !images[n.Image] {
			return fmt.Errorf("image %q is not in [[image]]", n.Image)
		}
		for _, f := range n.Files {
			if f.Service != "" {
				return fmt.Errorf("file %q: service %q: the node has one unnamed service", f.Path, f.Service)
			}
		}
		if n.Container == nil {
			return fmt.Errorf("container: missing (or list [[node.service]])")
		}
		return checkContainer("container", n.Container)
	}
	if n.Image != "" || n.Container != nil {
		return fmt.Errorf("image and container are set besides [[node.service]]: a node lists one or the other")
	}
	if len(n.Services) > MaxServices {
		return fmt.Errorf("%d services, at most %d allowed", len(n.Services), MaxServices)
	}
	names, containers := map[string]bool{}, map[string]string{}
	clustered := ""
	for i := range n.Services {
		s := &n.Services[i]
		if err := CheckName(s.Name); err != nil {
			return fmt.Errorf("service %d: name: %w", i+1, err)
		}
		if names[s.Name] {
			return fmt.Errorf("service %q: listed twice", s.Name)
		}
		if !images[s.Image] {
			return fmt.Errorf("service %q: image %q is not in [[image]]", s.Name, s.Image)
		}
		if len(s.DependsOn) > MaxServices {
			return fmt.Errorf("service %q: depends_on: %d entries, at most %d allowed", s.Name, len(s.DependsOn), MaxServices)
		}
		seen := map[string]bool{}
		for _, d := range s.DependsOn {
			if !names[d] || seen[d] {
				return fmt.Errorf("service %q: depends_on %q: not a service listed before it, or listed twice", s.Name, d)
			}
			seen[d] = true
		}
		names[s.Name] = true
		what := fmt.Sprintf("service %q: container", s.Name)
		if err := checkContainer("container", &s.Container); err != nil {
			return fmt.Errorf("service %q: %w", s.Name, err)
		}
		if o, dup := containers[s.Container.Name]; dup {
			return fmt.Errorf("%s: name %q already used by service %q", what, s.Container.Name, o)
		}
		containers[s.Container.Name] = s.Name
		if s.Container.Cluster != nil {
			if clustered != "" {
				return fmt.Errorf("%s: cluster: service %q is the clustered service already", what, clustered)
			}
			clustered = s.Name
		}
	}
	for _, f := range n.Files {
		if !names[f.Service] {
			return fmt.Errorf("file %q: service %q is not a service of the node", f.Path, f.Service)
		}
	}
	attached := 0
	for _, s := range n.Services {
		if s.Attach {
			attached++
		}
	}
	if n.Network.Driver != DriverNone && attached == 0 {
		return fmt.Errorf("network: driver %s, but no service is attached", n.Network.Driver)
	}
	if attached > 1 {
		return fmt.Errorf("network: %d services attached: the node's address goes to one", attached)
	}
	return nil
}

// checkContainer checks one literal container spec; what names it.
func checkContainer(what string, c *Container) error {
	if err := CheckName(c.Name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := checkContainerCommon(c.Ports, c.Binds, c.Env, c.Restart, c.Command, c.Entrypoint, c.Reload, c.Health); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if c.Network != "" {
		if err := CheckServiceNetwork(c.Network); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if cl := c.Cluster; cl != nil {
		if err := checkArgv("cluster: show", cl.Show, true); err != nil {
			return err
		}
		if err := checkClusterFormat(cl.Format); err != nil {
			return err
		}
		if cl.Self == "" {
			return fmt.Errorf("cluster: self: missing")
		}
		if err := checkString("cluster: self", cl.Self, 255); err != nil {
			return err
		}
		if len(cl.Peers) != len(cl.Join) {
			return fmt.Errorf("cluster: %d peers but %d join commands", len(cl.Peers), len(cl.Join))
		}
		if len(cl.Peers) >= MaxNodes {
			return fmt.Errorf("cluster: %d peers, at most %d allowed", len(cl.Peers), MaxNodes-1)
		}
		seen := map[string]bool{cl.Self: true}
		for i, p := range cl.Peers {
			if p == "" || seen[p] {
				return fmt.Errorf("cluster: peer %q: empty, duplicate or self", p)
			}
			seen[p] = true
			if err := checkString("cluster: peer", p, 255); err != nil {
				return err
			}
			if err := checkArgv(fmt.Sprintf("cluster: join %d", i+1), cl.Join[i], true); err != nil {
				return err
			}
		}
	}
	return nil
}
