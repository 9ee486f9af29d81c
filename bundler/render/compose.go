package render

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	"github.com/pullship/pullship/schema"
)

// MaxComposeSize bounds the compose file a fleet names.
const MaxComposeSize = 1 << 20

// ComposeNetwork is the network name that, listed in a compose service's
// networks, attaches the node's overlay address to it.
const ComposeNetwork = "pullship"

// composeKeys are the compose service keys pullship reads; any other is an
// error naming it. Nested keys are checked the same way (composeNested).
var composeKeys = []string{"image", "container_name", "ports", "volumes", "environment", "command",
	"entrypoint", "restart", "healthcheck", "depends_on", "networks", "x-pullship"}

var composeNested = map[string][]string{
	"healthcheck": {"test", "timeout", "interval", "retries", "disable"},
	"ports":       {"target", "published", "host_ip", "protocol"},
	"volumes":     {"type", "source", "target", "read_only"},
	"depends_on":  {"condition", "required"},
}

// composeExt is a service's x-pullship extension: what pullship needs that
// compose has no key for.
type composeExt struct {
	ImageName    string               `json:"image_name"`
	Reload       *schema.Reload       `json:"reload"`
	HealthExpect string               `json:"health_expect"`
	Cluster      *schema.FleetCluster `json:"cluster"`
	// Network is the service's network key (a template): compose's own
	// networks are the project's, which pullship does not create.
	Network string `json:"network"`
}

// LoadCompose reads the compose file name (relative to dir, never from
// outside it) with compose-go and returns its services as fleet services,
// in the file's order. Every compose key pullship does not support is an
// error naming the key and the service, whether written in the service or
// brought in by a YAML merge key (<<: *fragment). A ${VAR} (or $VAR) is an
// error naming it: a release depends on the fleet repository only, never
// on the environment of the machine that cuts it (fleet templates and vars
// are how values differ per node); $$ is a literal $, as in compose.
func LoadCompose(dir, name string) ([]schema.Service, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	defer root.Close()
	data, err := readBounded(root, name, MaxComposeSize)
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	order, err := composeCheckKeys(name, data)
	if err != nil {
		return nil, err
	}
	// With every variable refused above, compose-go's interpolation (of an
	// empty environment) only turns $$ into $.
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("compose: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(abs, name), Content: data}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("pullship", true)
		o.SkipNormalization = true
		o.SkipConsistencyCheck = true
		o.SkipInclude = true
		o.SkipExtends = true
		o.ResolvePaths = false
		o.SkipResolveEnvironment = true
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	out := make([]schema.Service, 0, len(order))
	for _, svc := range order {
		c, ok := p.Services[svc]
		if !ok {
			return nil, fmt.Errorf("%s: service %q: not loaded", name, svc)
		}
		s, err := composeService(svc, &c)
		if err != nil {
			return nil, fmt.Errorf("%s: service %q: %w", name, svc, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// composeCheckKeys refuses every key pullship does not support, as the
// user wrote it (before compose-go turns short forms into long ones), and
// returns the service names in the file's order.
func composeCheckKeys(name string, data []byte) ([]string, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: want a mapping at the top", name)
	}
	var order []string
	top, err := yamlEntries(doc.Content[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, e := range top {
		k, v := e.key.Value, yamlDeref(e.value)
		what := "key " + strconv.Quote(k)
		if k == "services" {
			what = ""
		}
		switch {
		case k == "services":
			if v.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s:%d: services: want a mapping", name, v.Line)
			}
			svcs, err := yamlEntries(v)
			if err != nil {
				return nil, fmt.Errorf("%s: services: %w", name, err)
			}
			for _, se := range svcs {
				svc := se.key.Value
				if line, err := composeCheckService(se.value); err != nil {
					if line == 0 {
						line = se.key.Line
					}
					return nil, fmt.Errorf("%s:%d: service %q: %w", name, line, svc, err)
				}
				if line, err := composeCheckVars(se.value, ""); err != nil {
					return nil, fmt.Errorf("%s:%d: service %q: %w", name, line, svc, err)
				}
				order = append(order, svc)
			}
			continue
		case k == "name", k == "version", strings.HasPrefix(k, "x-"):
		case k == "networks":
			nets, err := yamlEntries(v)
			if err != nil {
				return nil, fmt.Errorf("%s: networks: %w", name, err)
			}
			for _, ne := range nets {
				if n := ne.key.Value; n != ComposeNetwork {
					return nil, fmt.Errorf("%s:%d: networks: %q: pullship attaches only its overlay network (%q)", name, ne.key.Line, n, ComposeNetwork)
				}
			}
		default:
			return nil, fmt.Errorf("%s:%d: key %q is not supported by pullship", name, e.key.Line, k)
		}
		// What the services do not read (a fragment under x-, the name)
		// is checked too: a variable there would be interpolated all the
		// same.
		if line, err := composeCheckVars(e.value, ""); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", name, line, what, err)
		}
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("%s: no services", name)
	}
	return order, nil
}

// composeCheckService checks one service's keys; it returns the line of
// the key refused.
func composeCheckService(n *yaml.Node) (int, error) {
	n = yamlDeref(n)
	if n.Kind != yaml.MappingNode {
		return 0, fmt.Errorf("want a mapping")
	}
	es, err := yamlEntries(n)
	if err != nil {
		return n.Line, err
	}
	for _, e := range es {
		k, v := e.key.Value, yamlDeref(e.value)
		if !slices.Contains(composeKeys, k) {
			return e.key.Line, fmt.Errorf("key %q is not supported by pullship", k)
		}
		if k == "networks" {
			if err := composeCheckNetworks(v); err != nil {
				return e.key.Line, err
			}
			continue
		}
		allowed, nested := composeNested[k]
		if !nested {
			continue
		}
		var maps []*yaml.Node
		switch {
		case v.Kind == yaml.MappingNode && k == "depends_on":
			deps, err := yamlEntries(v)
			if err != nil {
				return e.key.Line, err
			}
			for _, d := range deps {
				maps = append(maps, yamlDeref(d.value))
			}
		case v.Kind == yaml.MappingNode:
			maps = append(maps, v)
		case v.Kind == yaml.SequenceNode:
			for _, el := range v.Content {
				if el = yamlDeref(el); el.Kind == yaml.MappingNode {
					maps = append(maps, el)
				}
			}
		}
		for _, m := range maps {
			if m.Kind != yaml.MappingNode {
				continue
			}
			subs, err := yamlEntries(m)
			if err != nil {
				return m.Line, err
			}
			for _, sub := range subs {
				if !slices.Contains(allowed, sub.key.Value) {
					return sub.key.Line, fmt.Errorf("key %q is not supported by pullship", k+"."+sub.key.Value)
				}
			}
		}
	}
	return 0, nil
}

func composeCheckNetworks(v *yaml.Node) error {
	var names []string
	switch v.Kind {
	case yaml.SequenceNode:
		for _, e := range v.Content {
			names = append(names, yamlDeref(e).Value)
		}
	case yaml.MappingNode:
		nets, err := yamlEntries(v)
		if err != nil {
			return err
		}
		for _, ne := range nets {
			names = append(names, ne.key.Value)
			if opts := yamlDeref(ne.value); len(opts.Content) > 0 {
				return fmt.Errorf("key %q is not supported by pullship", "networks."+ne.key.Value+"."+yamlDeref(opts.Content[0]).Value)
			}
		}
	}
	for _, n := range names {
		if n != ComposeNetwork {
			return fmt.Errorf("networks: %q: pullship attaches only its overlay network (%q)", n, ComposeNetwork)
		}
	}
	return nil
}

// maxYAMLDepth bounds the aliases and merge keys followed from one node:
// a YAML file can make an alias graph as deep as it likes.
const maxYAMLDepth = 32

// yamlEntry is one key and value of a YAML mapping.
type yamlEntry struct{ key, value *yaml.Node }

// yamlDeref is n, or what the alias n names.
func yamlDeref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < maxYAMLDepth; i++ {
		n = n.Alias
	}
	return n
}

// yamlEntries returns the entries of mapping m as YAML (and compose-go)
// reads them: a merge key (<<: *fragment, or a list of fragments) brings
// in the fragment's entries, so that a key refused in a service is refused
// as well when a fragment merged into it holds it. A key both written and
// merged is listed twice, which is all the key checks need.
func yamlEntries(m *yaml.Node) ([]yamlEntry, error) {
	var out []yamlEntry
	var walk func(m *yaml.Node, depth int) error
	walk = func(m *yaml.Node, depth int) error {
		if depth > maxYAMLDepth {
			return fmt.Errorf("line %d: merge keys nested more than %d deep", m.Line, maxYAMLDepth)
		}
		m = yamlDeref(m)
		if m.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			if k.Tag != "!!merge" {
				out = append(out, yamlEntry{k, v})
				continue
			}
			v = yamlDeref(v)
			frags := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				frags = v.Content
			}
			for _, f := range frags {
				if f = yamlDeref(f); f.Kind != yaml.MappingNode {
					return fmt.Errorf("line %d: merge key: want a mapping or a list of mappings", k.Line)
				}
				if err := walk(f, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk(m, 0)
}

// composeCheckVars refuses every variable in the strings below n (keys
// and values, not following aliases: what an alias names is checked where
// it is written); path names n. It returns the line of the string refused.
func composeCheckVars(n *yaml.Node, path string) (int, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return 0, nil
		}
		var vars []string
		_, err := template.SubstituteWithOptions(n.Value, func(name string) (string, bool) {
			vars = append(vars, name)
			return "", false
		}, template.WithoutLogging)
		at := ""
		if path != "" {
			at = path + ": "
		}
		if len(vars) > 0 {
			return n.Line, fmt.Errorf("%s%q: variable %s: interpolation is not supported by pullship (a release does not read the environment it is cut in; values that differ per node are fleet templates and vars, {{.Vars.NAME}}); a literal $ is written $$", at, n.Value, vars[0])
		}
		if err != nil {
			return n.Line, fmt.Errorf("%s%q: %w (a literal $ is written $$)", at, n.Value, err)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			sub := k.Value
			if path != "" {
				sub = path + "." + k.Value
			}
			if line, err := composeCheckVars(k, path); err != nil {
				return line, err
			}
			if line, err := composeCheckVars(n.Content[i+1], sub); err != nil {
				return line, err
			}
		}
	case yaml.SequenceNode:
		for _, e := range n.Content {
			if line, err := composeCheckVars(e, path); err != nil {
				return line, err
			}
		}
	}
	return 0, nil
}

// composeService maps one loaded compose service onto a fleet service.
func composeService(name string, c *types.ServiceConfig) (schema.Service, error) {
	s := schema.Service{Name: name, Image: c.Image, Container: c.ContainerName, Restart: c.Restart,
		Command: slices.Clone([]string(c.Command)), Entrypoint: slices.Clone([]string(c.Entrypoint)),
		Reload: schema.Reload{Action: schema.ReloadRestart}}
	if s.Image == "" {
		return s, fmt.Errorf("image: missing (pullship packs an image; build is not supported)")
	}
	if s.Container == "" {
		s.Container = "{{.Service}}-{{.Node}}"
	}
	for _, p := range c.Ports {
		if p.Published == "" {
			return s, fmt.Errorf("ports: target %d: no published host port", p.Target)
		}
		port := p.Published + ":" + strconv.FormatUint(uint64(p.Target), 10)
		if p.HostIP != "" {
			port = p.HostIP + ":" + port
		}
		if p.Protocol != "" && p.Protocol != "tcp" {
			port += "/" + p.Protocol
		}
		s.Ports = append(s.Ports, port)
	}
	for _, v := range c.Volumes {
		if v.Type != types.VolumeTypeBind && v.Type != types.VolumeTypeVolume {
			return s, fmt.Errorf("volumes: type %q is not supported by pullship (bind or volume)", v.Type)
		}
		b := v.Source + ":" + v.Target
		if v.ReadOnly {
			b += ":ro"
		}
		s.Binds = append(s.Binds, b)
	}
	if len(c.Environment) > 0 {
		s.Env = map[string]string{}
		for k, v := range c.Environment {
			if v == nil {
				return s, fmt.Errorf("environment: %s: no value (pullship does not read the environment of the release machine)", k)
			}
			s.Env[k] = *v
		}
	}
	if h := c.HealthCheck; h != nil && !h.Disable {
		switch {
		case len(h.Test) == 0, h.Test[0] == "NONE":
		case h.Test[0] == "CMD" && len(h.Test) > 1:
			s.Health.Command = slices.Clone(h.Test[1:])
		case h.Test[0] == "CMD-SHELL" && len(h.Test) == 2:
			s.Health.Command = []string{"/bin/sh", "-c", h.Test[1]}
		default:
			return s, fmt.Errorf("healthcheck: test %q: want [\"CMD\", ...] or [\"CMD-SHELL\", \"...\"]", []string(h.Test))
		}
		if h.Timeout != nil {
			s.Health.Timeout = schema.Duration(*h.Timeout)
		}
		if h.Interval != nil {
			s.Health.Interval = schema.Duration(*h.Interval)
		}
		if h.Retries != nil {
			if *h.Retries > 1000 {
				return s, fmt.Errorf("healthcheck: retries %d: too many", *h.Retries)
			}
			s.Health.Retries = int(*h.Retries)
		}
	}
	for dep, d := range c.DependsOn {
		if d.Condition != "" && d.Condition != types.ServiceConditionStarted && d.Condition != types.ServiceConditionHealthy {
			return s, fmt.Errorf("depends_on: %s: condition %q is not supported by pullship (service_started or service_healthy: services start in order and all must be healthy)", dep, d.Condition)
		}
		if !d.Required {
			return s, fmt.Errorf("depends_on: %s: required: false is not supported by pullship", dep)
		}
		s.DependsOn = append(s.DependsOn, dep)
	}
	sort.Strings(s.DependsOn)
	if _, ok := c.Networks[ComposeNetwork]; ok {
		t := true
		s.Attach = &t
	}
	if raw, ok := c.Extensions["x-pullship"]; ok {
		b, err := json.Marshal(raw)
		if err != nil {
			return s, fmt.Errorf("x-pullship: %w", err)
		}
		var ext composeExt
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ext); err != nil {
			return s, fmt.Errorf("x-pullship: %w", err)
		}
		s.ImageName, s.Health.Expect, s.Cluster, s.Network = ext.ImageName, ext.HealthExpect, ext.Cluster, ext.Network
		if ext.Reload != nil {
			s.Reload = *ext.Reload
		}
	}
	return s, nil
}
