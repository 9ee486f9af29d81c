package schema

import (
	"fmt"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// MaxServices bounds the services of a fleet (and of a node).
const MaxServices = MaxImages

// fleetServices is fleet.toml in the [[service]] form: the outer Service
// field shadows Fleet.Service when decoding.
type fleetServices struct {
	Fleet
	Service []Service `toml:"service"`
}

// decodeFleet decodes fleet.toml in either form: one [service] table or
// [[service]] tables. The form is told from the document's shape before the
// strict decode, which then reports unknown keys of that form.
func decodeFleet(name string, data []byte) (*Fleet, error) {
	var shape map[string]any
	if len(data) <= MaxFileSize {
		// Errors are DecodeStrict's to report, with their line.
		_, _ = toml.Decode(string(data), &shape)
	}
	if _, multi := shape["service"].([]map[string]any); multi {
		var fs fleetServices
		if err := DecodeStrict(name, data, &fs); err != nil {
			return nil, err
		}
		f := fs.Fleet
		f.Service, f.Services, f.Multi, f.listed = Service{}, fs.Service, true, true
		return &f, nil
	}
	var f Fleet
	if err := DecodeStrict(name, data, &f); err != nil {
		return nil, err
	}
	_, f.listed = shape["service"]
	return &f, nil
}

// serviceWhat names service s in errors: "service" in the [service] form,
// `service "NAME"` otherwise.
func (f *Fleet) serviceWhat(s *Service) string {
	if !f.Multi {
		return "service"
	}
	return fmt.Sprintf("service %q", s.Name)
}

// SetServices makes services (read from the compose file the fleet names)
// the fleet's [[service]] list, fills their defaults and validates the
// fleet again.
func (f *Fleet) SetServices(services []Service) error {
	f.Services, f.Multi = services, true
	if f.Services == nil {
		f.Services = []Service{}
	}
	for i := range f.Services {
		if f.Services[i].Restart == "" {
			f.Services[i].Restart = DefaultRestart
		}
	}
	return f.Validate()
}

// All returns the fleet's services in fleet order: the [[service]] tables,
// or the [service] table (with an empty Name) alone.
func (f *Fleet) All() []*Service {
	if !f.Multi {
		return []*Service{&f.Service}
	}
	out := make([]*Service, len(f.Services))
	for i := range f.Services {
		out[i] = &f.Services[i]
	}
	return out
}

// ServiceByName returns the [[service]] called name.
func (f *Fleet) ServiceByName(name string) (*Service, bool) {
	for i := range f.Services {
		if f.Services[i].Name == name {
			return &f.Services[i], true
		}
	}
	return nil, false
}

// NodeServices returns the services node n runs, in start order: every
// service's depends_on before it, fleet order otherwise. f must be valid.
func (f *Fleet) NodeServices(n *FleetNode) []*Service {
	if !f.Multi {
		return []*Service{&f.Service}
	}
	order, _ := f.startOrder()
	var out []*Service
	for _, i := range order {
		s := &f.Services[i]
		if len(n.Services) == 0 || slices.Contains(n.Services, s.Name) {
			out = append(out, s)
		}
	}
	return out
}

// Attached reports whether node n's overlay address is attached to s, one
// of NodeServices(n): the node's services with attach = true, or, when
// none has it, the node's first service in fleet order.
func (f *Fleet) Attached(n *FleetNode, s *Service) bool {
	if !f.Multi {
		return true
	}
	var first *Service
	marked := false
	for i := range f.Services {
		c := &f.Services[i]
		if len(n.Services) > 0 && !slices.Contains(n.Services, c.Name) {
			continue
		}
		if first == nil {
			first = c
		}
		marked = marked || (c.Attach != nil && *c.Attach)
	}
	if marked {
		return s.Attach != nil && *s.Attach
	}
	return s == first
}

// startOrder returns the indexes of f.Services in start order (a stable
// topological order: fleet order unless depends_on says otherwise), or an
// error naming a dependency cycle.
func (f *Fleet) startOrder() ([]int, error) {
	index := map[string]int{}
	for i, s := range f.Services {
		index[s.Name] = i
	}
	const (
		unseen = iota
		visiting
		done
	)
	state := make([]int, len(f.Services))
	var order []int
	var path []string
	var visit func(i int) error
	visit = func(i int) error {
		switch state[i] {
		case done:
			return nil
		case visiting:
			from := slices.Index(path, f.Services[i].Name)
			cycle := append(slices.Clone(path[from:]), f.Services[i].Name)
			return fmt.Errorf("service %q: depends_on cycle %s", f.Services[i].Name, strings.Join(cycle, " → "))
		}
		state[i] = visiting
		path = append(path, f.Services[i].Name)
		for _, d := range f.Services[i].DependsOn {
			if err := visit(index[d]); err != nil {
				return err
			}
		}
		path = path[:len(path)-1]
		state[i] = done
		order = append(order, i)
		return nil
	}
	for i := range f.Services {
		if err := visit(i); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// validateServices checks the fleet's services in either form, and the
// service references of its templates and nodes.
func (f *Fleet) validateServices() error {
	if f.Compose != "" {
		if err := CheckRelPath(f.Compose); err != nil {
			return fmt.Errorf("compose: %w", err)
		}
		if f.listed {
			return fmt.Errorf("compose: the services come from %s: no [service] or [[service]] beside it", f.Compose)
		}
		if !f.Multi {
			return nil // not loaded yet: SetServices validates them
		}
	}
	if !f.Multi {
		s := &f.Service
		switch {
		case s.Name != "":
			return fmt.Errorf("service: name: only [[service]] tables are named (write [[service]] for a fleet of named services)")
		case len(s.DependsOn) > 0:
			return fmt.Errorf("service: depends_on: only [[service]] tables depend on each other")
		case s.Attach != nil:
			return fmt.Errorf("service: attach: only [[service]] tables choose the attached service")
		}
		if err := s.validate("service"); err != nil {
			return err
		}
		for _, t := range f.Templates {
			if t.Service != "" {
				return fmt.Errorf("template %q: service %q: a [service] fleet has one unnamed service (write [[service]] tables to name them)", t.Name, t.Service)
			}
		}
		for _, n := range f.Nodes {
			if len(n.Services) > 0 {
				return fmt.Errorf("node %q: services: a [service] fleet has one service (write [[service]] tables to choose among several)", n.Name)
			}
		}
		return nil
	}

	if len(f.Services) == 0 {
		return fmt.Errorf("no [[service]]")
	}
	if len(f.Services) > MaxServices {
		return fmt.Errorf("%d services, at most %d allowed", len(f.Services), MaxServices)
	}
	names := map[string]bool{}
	images := map[string]string{} // release image name → reference
	clustered := ""
	hostPorts := map[string]string{}
	for i := range f.Services {
		s := &f.Services[i]
		if err := CheckName(s.Name); err != nil {
			return fmt.Errorf("service %d: name: %w", i+1, err)
		}
		if names[s.Name] {
			return fmt.Errorf("service %q: defined twice", s.Name)
		}
		names[s.Name] = true
		what := f.serviceWhat(s)
		if err := s.validate(what); err != nil {
			return err
		}
		img := s.ReleaseImageName()
		if ref, ok := images[img]; ok && ref != s.Image {
			return fmt.Errorf("%s: image name %q already names image %q (set image_name)", what, img, ref)
		}
		images[img] = s.Image
		if s.Cluster != nil {
			if clustered != "" {
				return fmt.Errorf("%s: cluster: service %q is the clustered service already (one per fleet)", what, clustered)
			}
			clustered = s.Name
		}
		for _, p := range s.Ports {
			k, _ := CheckPort(p)
			if o, dup := hostPorts[k]; dup {
				return fmt.Errorf("%s: port %q: host port already used by service %q", what, p, o)
			}
			hostPorts[k] = s.Name
		}
	}
	for i := range f.Services {
		s := &f.Services[i]
		if len(s.DependsOn) > MaxServices {
			return fmt.Errorf("service %q: depends_on: %d entries, at most %d allowed", s.Name, len(s.DependsOn), MaxServices)
		}
		seen := map[string]bool{}
		for _, d := range s.DependsOn {
			switch {
			case d == s.Name:
				return fmt.Errorf("service %q: depends_on: a service cannot depend on itself", s.Name)
			case !names[d]:
				return fmt.Errorf("service %q: depends_on: no service %q", s.Name, d)
			case seen[d]:
				return fmt.Errorf("service %q: depends_on: %q listed twice", s.Name, d)
			}
			seen[d] = true
		}
	}
	if _, err := f.startOrder(); err != nil {
		return err
	}
	for _, t := range f.Templates {
		switch {
		case t.Service == "" && len(f.Services) > 1:
			return fmt.Errorf("template %q: service: missing (name the service whose reload a change of this file triggers)", t.Name)
		case t.Service != "" && !names[t.Service]:
			return fmt.Errorf("template %q: service: no service %q", t.Name, t.Service)
		}
	}
	for i := range f.Nodes {
		n := &f.Nodes[i]
		if n.Container != "" {
			return fmt.Errorf("node %q: container: a [[service]] fleet names containers per service", n.Name)
		}
		if n.Services != nil && len(n.Services) == 0 {
			return fmt.Errorf("node %q: services: empty (leave it out to run every service)", n.Name)
		}
		if len(n.Services) > MaxServices {
			return fmt.Errorf("node %q: services: %d entries, at most %d allowed", n.Name, len(n.Services), MaxServices)
		}
		run := map[string]bool{}
		for _, name := range n.Services {
			if !names[name] {
				return fmt.Errorf("node %q: services: no service %q", n.Name, name)
			}
			if run[name] {
				return fmt.Errorf("node %q: services: %q listed twice", n.Name, name)
			}
			run[name] = true
		}
		var attached []string
		for _, s := range f.NodeServices(n) {
			if s.Attach != nil && *s.Attach {
				attached = append(attached, s.Name)
			}
		}
		if len(attached) > 1 {
			return fmt.Errorf("node %q: services %q and %q both have attach = true: the node's overlay address is one address, for one service", n.Name, attached[0], attached[1])
		}
		if len(run) == 0 {
			continue
		}
		for _, name := range n.Services {
			s, _ := f.ServiceByName(name)
			for _, d := range s.DependsOn {
				if !run[d] {
					return fmt.Errorf("node %q: services: %q depends on %q, which the node does not run", n.Name, name, d)
				}
			}
		}
	}
	return nil
}
