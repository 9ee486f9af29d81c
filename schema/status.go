package schema

import (
	"fmt"
	"net/netip"
	"time"
)

// Status is status.toml, a node's report of what it runs, committed to
// refs/heads/status/<node> and signed by the node's status key. Other nodes
// and the operator read it, so every field is bounded: a compromised node
// must not be able to make readers allocate much. See docs/format.md.
type Status struct {
	Node     string    `toml:"node"`
	Region   string    `toml:"region"`
	Sequence int64     `toml:"sequence"` // strictly increasing per node, 1 first
	Time     time.Time `toml:"time"`     // when the report was written
	// TargetVersion is the newest verified release; AppliedVersion the
	// release running now (0: none yet); FailedVersion the last release
	// whose apply or health check failed and was rolled back (0: none).
	TargetVersion  int64 `toml:"target_version"`
	AppliedVersion int64 `toml:"applied_version"`
	FailedVersion  int64 `toml:"failed_version,omitempty"`
	// AppliedManifest is the sha256 of the release.toml applied (hex;
	// empty when none): versions alone can repeat after a version reset.
	AppliedManifest string          `toml:"applied_manifest,omitempty"`
	Image           string          `toml:"image,omitempty"` // running image ID "sha256:<hex>"
	LastError       string          `toml:"last_error,omitempty"`
	Files           []StatusFile    `toml:"file,omitempty"`
	Container       StatusContainer `toml:"container"`
	Network         StatusNetwork   `toml:"network"`
	Health          StatusHealth    `toml:"health"`
	Cluster         StatusCluster   `toml:"cluster"`
	// Services are a node of several services' containers, in start order
	// (absent for a one-service node). Container and Image above are then
	// the clustered service's (else the first attached one's), and Health
	// is the node's: OK only when every service is healthy.
	Services []StatusService `toml:"service,omitempty"`
}

// StatusService is one service of a node as the host runs it.
type StatusService struct {
	Name      string          `toml:"name"`
	Image     string          `toml:"image,omitempty"` // running image ID "sha256:<hex>"
	Container StatusContainer `toml:"container"`
	Health    StatusHealth    `toml:"health"` // output at most MaxServiceOutputLen
}

// MaxServiceOutputLen bounds the health output of one service in a report.
const MaxServiceOutputLen = 1024

// StatusFile is the digest of one file as found on the host.
type StatusFile struct {
	Target string `toml:"target"` // absolute host path
	SHA256 string `toml:"sha256"` // hex; empty when the file is missing
}

// StatusContainer is the node's container as the engine reports it.
type StatusContainer struct {
	ID        string     `toml:"id,omitempty"` // 64-hex container id; empty when missing
	State     string     `toml:"state"`        // ContainerStates
	StartedAt *time.Time `toml:"started_at,omitempty"`
}

// ContainerStates are the values of StatusContainer.State: Docker's states
// plus "missing" for no container.
var ContainerStates = []string{"missing", "created", "running", "paused", "restarting", "removing", "exited", "dead"}

// StatusNetwork is the overlay attachment as last checked.
type StatusNetwork struct {
	Driver   string `toml:"driver"`
	Address  string `toml:"address,omitempty"`
	Attached bool   `toml:"attached"`
}

// StatusHealth is the last health check.
type StatusHealth struct {
	OK        bool       `toml:"ok"`
	Output    string     `toml:"output,omitempty"` // truncated to MaxOutputLen
	CheckedAt *time.Time `toml:"checked_at,omitempty"`
}

// StatusCluster is the cluster view the node saw.
type StatusCluster struct {
	Joined  bool           `toml:"joined"`
	Members []StatusMember `toml:"member,omitempty"`
}

// StatusMember is one row of the cluster view.
type StatusMember struct {
	Node    string `toml:"node"` // member name as the service prints it
	Running bool   `toml:"running"`
}

// MaxStatusFileLen bounds status.toml: its longest valid form (every file
// of a node and a full cluster view) stays below it.
const MaxStatusFileLen = 512 << 10

// ParseStatus decodes and validates status.toml (read from the file called name).
func ParseStatus(name string, data []byte) (*Status, error) {
	if len(data) > MaxStatusFileLen {
		return nil, fmt.Errorf("%s: %d bytes is larger than the %d bytes a status report may have", name, len(data), MaxStatusFileLen)
	}
	var s Status
	if err := DecodeStrict(name, data, &s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &s, nil
}

// Encode validates s and returns its canonical TOML bytes; ParseStatus of
// them yields a Status equal to s.
func (s *Status) Encode() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("encode status of node %q: %w", s.Node, err)
	}
	return encodeTOML(s)
}

// Validate checks everything ParseStatus checks after decoding.
func (s *Status) Validate() error {
	if err := CheckName(s.Node); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := CheckName(s.Region); err != nil {
		return fmt.Errorf("region: %w", err)
	}
	if s.AppliedManifest != "" {
		if err := checkHex64("applied_manifest", s.AppliedManifest); err != nil {
			return err
		}
	}
	if s.Sequence < 1 {
		return fmt.Errorf("sequence %d: must be at least 1", s.Sequence)
	}
	if err := checkUTC("time", s.Time); err != nil {
		return err
	}
	for _, v := range []struct {
		what string
		n    int64
	}{{"target_version", s.TargetVersion}, {"applied_version", s.AppliedVersion}, {"failed_version", s.FailedVersion}} {
		if v.n < 0 {
			return fmt.Errorf("%s %d: negative", v.what, v.n)
		}
	}
	if s.Image != "" {
		if err := checkDigest("image", s.Image); err != nil {
			return err
		}
	}
	if err := checkString("last_error", s.LastError, MaxOutputLen); err != nil {
		return err
	}
	if len(s.Files) > MaxFilesPerNode {
		return fmt.Errorf("%d files, at most %d allowed", len(s.Files), MaxFilesPerNode)
	}
	seen := map[string]bool{}
	for _, f := range s.Files {
		if err := CheckAbsPath(f.Target); err != nil {
			return fmt.Errorf("file: %w", err)
		}
		if seen[f.Target] {
			return fmt.Errorf("file %q: listed twice", f.Target)
		}
		seen[f.Target] = true
		if f.SHA256 != "" {
			if err := checkHex64("file "+f.Target+": sha256", f.SHA256); err != nil {
				return err
			}
		}
	}
	if err := s.Container.validate("container"); err != nil {
		return err
	}
	if len(s.Services) > MaxServices {
		return fmt.Errorf("%d services, at most %d allowed", len(s.Services), MaxServices)
	}
	services := map[string]bool{}
	for _, sv := range s.Services {
		if err := CheckName(sv.Name); err != nil {
			return fmt.Errorf("service: %w", err)
		}
		if services[sv.Name] {
			return fmt.Errorf("service %q: listed twice", sv.Name)
		}
		services[sv.Name] = true
		what := fmt.Sprintf("service %q", sv.Name)
		if sv.Image != "" {
			if err := checkDigest(what+": image", sv.Image); err != nil {
				return err
			}
		}
		if err := sv.Container.validate(what + ": container"); err != nil {
			return err
		}
		if err := checkString(what+": health: output", sv.Health.Output, MaxServiceOutputLen); err != nil {
			return err
		}
		if sv.Health.CheckedAt != nil {
			if err := checkUTC(what+": health: checked_at", *sv.Health.CheckedAt); err != nil {
				return err
			}
		}
	}
	n := &s.Network
	if n.Driver != DriverWeave && n.Driver != DriverDocker && n.Driver != DriverNone {
		return fmt.Errorf("network: driver %q: want weave, docker or none", n.Driver)
	}
	if n.Address != "" {
		if _, err := netip.ParsePrefix(n.Address); err != nil {
			return fmt.Errorf("network: address %q: want an address with prefix", n.Address)
		}
	}
	if err := checkString("health: output", s.Health.Output, MaxOutputLen); err != nil {
		return err
	}
	if s.Health.CheckedAt != nil {
		if err := checkUTC("health: checked_at", *s.Health.CheckedAt); err != nil {
			return err
		}
	}
	if len(s.Cluster.Members) > MaxNodes {
		return fmt.Errorf("cluster: %d members, at most %d allowed", len(s.Cluster.Members), MaxNodes)
	}
	members := map[string]bool{}
	for _, m := range s.Cluster.Members {
		if m.Node == "" {
			return fmt.Errorf("cluster: member with an empty name")
		}
		if err := checkString("cluster: member", m.Node, 255); err != nil {
			return err
		}
		if members[m.Node] {
			return fmt.Errorf("cluster: member %q listed twice", m.Node)
		}
		members[m.Node] = true
	}
	return nil
}

func (c *StatusContainer) validate(what string) error {
	if c.ID != "" {
		if err := checkHex64(what+": id", c.ID); err != nil {
			return err
		}
	}
	known := false
	for _, st := range ContainerStates {
		known = known || c.State == st
	}
	if !known {
		return fmt.Errorf("%s: state %q: want one of %v", what, c.State, ContainerStates)
	}
	if c.StartedAt != nil {
		if err := checkUTC(what+": started_at", *c.StartedAt); err != nil {
			return err
		}
	}
	return nil
}
