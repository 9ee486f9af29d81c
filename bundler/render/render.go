// Package render turns a fleet (fleet.toml plus its config templates) into
// what a release pins for every node: the rendered file bytes and the
// literal [[node]] entries of release.toml. It is the only place templates
// are executed; the agent applies the results verbatim.
//
// Rendering is deterministic: the same fleet and sources give the same
// bytes, so an unchanged config produces an identical release tree.
package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/pullship/pullship/schema"
)

// MaxTemplateSize bounds one template source file.
const MaxTemplateSize = 1 << 20

// Rendered is the output for a whole fleet, nodes in fleet order.
type Rendered struct {
	Nodes []Node
}

// Node is one node's rendered release entry and files. Release.Files holds
// one entry per Files element, same order, with matching Path, Target,
// SHA256, Length and Mode. Release.Image is the fleet's image name; the
// caller adds the matching [[image]] entry.
type Node struct {
	Release schema.ReleaseNode
	Files   []File
}

// File is one rendered file.
type File struct {
	Path   string // relative path inside nodes/<node>/ (the template name)
	Target string // absolute host path
	Mode   schema.FileMode
	Data   []byte
	SHA256 string // hex sha256 of Data
	// Secret says the template called secret: Data holds node secrets and
	// must be encrypted to the node before it goes anywhere (see
	// bundler.EncryptRendered); the matching Release.Files entry pins the
	// plaintext until then.
	Secret bool
}

// Options are RenderWith's optional inputs.
type Options struct {
	// Secrets returns the decrypted secrets of a node, key → value. It is
	// called at most once per node, and only for nodes whose templates call
	// secret. Nil means no secrets: a template calling secret fails.
	Secrets func(node string) (map[string]string, error)
}

// MissingSecretError reports a template asking for a secret the node does
// not have; the wrapping error names the node and the template.
type MissingSecretError struct {
	Node, Key string
}

func (e *MissingSecretError) Error() string {
	return fmt.Sprintf("secret %q is not set for node %q (set it with: pullship secret set %s %s)", e.Key, e.Node, e.Node, e.Key)
}

// ReleaseNodes returns the release entries of all nodes, in fleet order.
func (r *Rendered) ReleaseNodes() []schema.ReleaseNode {
	out := make([]schema.ReleaseNode, len(r.Nodes))
	for i, n := range r.Nodes {
		out[i] = n.Release
	}
	return out
}

// Data is what every template sees. Vars is the fleet's [vars] overlaid
// with the node's own vars; Nodes lists every node of the fleet (with
// empty Vars and Nodes) in fleet order. Peer is set only while rendering a
// cluster join argument: the member name of the peer joined through.
type Data struct {
	Node    string
	Region  string
	Address string // IP without prefix, "10.0.0.1"
	CIDR    string // "10.0.0.1/24"
	Wave    int
	Vars    map[string]any
	Nodes   []Data
	Peer    string
	// Service is the name of the [[service]] whose strings or files are
	// being rendered; empty in a [service] fleet.
	Service string
}

// ParseFleet parses and validates fleet.toml (schema.ParseFleet), reads the
// compose file it names (LoadCompose), and checks the syntax of the
// fleet's template strings, which schema leaves to the renderer. name is
// the path of fleet.toml: the compose file is read relative to it.
func ParseFleet(name string, data []byte) (*schema.Fleet, error) {
	f, err := schema.ParseFleet(name, data)
	if err != nil {
		return nil, err
	}
	if f.Compose != "" {
		services, err := LoadCompose(filepath.Dir(name), f.Compose)
		if err != nil {
			return nil, err
		}
		if err := f.SetServices(services); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	for _, t := range f.TemplateTexts() {
		if _, err := template.New(t.What).Option("missingkey=error").Parse(t.Text); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", name, t.What, err)
		}
	}
	return f, nil
}

// Render renders fleet f whose fleet.toml lives in directory dir (template
// sources and status key files are read relative to it, and never from
// outside it). f must have come from [ParseFleet]. It is RenderWith
// without options: templates calling secret fail.
func Render(f *schema.Fleet, dir string) (*Rendered, error) {
	return RenderWith(f, dir, Options{})
}

// RenderWith is Render with options. Config templates may call
// {{secret "key"}}, which yields the node's secret from o.Secrets; files
// that did are marked File.Secret.
func RenderWith(f *schema.Fleet, dir string, o Options) (*Rendered, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	defer root.Close()

	tmpls := make([]*template.Template, len(f.Templates))
	for i, t := range f.Templates {
		src, err := readBounded(root, t.Source, MaxTemplateSize)
		if err != nil {
			return nil, fmt.Errorf("render: template %q: %w", t.Name, err)
		}
		// The real secret func is bound per node in renderNode.
		tmpls[i], err = template.New(t.Name).Option("missingkey=error").Funcs(template.FuncMap{"secret": noSecret}).Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("render: template %q: %w", t.Name, err)
		}
	}

	all := make([]Data, len(f.Nodes))
	for i := range f.Nodes {
		all[i] = nodeData(f, &f.Nodes[i], nil)
	}
	// Join order: earlier waves first, fleet order within a wave.
	order := make([]int, len(f.Nodes))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return f.Nodes[a].Wave - f.Nodes[b].Wave })

	out := &Rendered{Nodes: make([]Node, len(f.Nodes))}
	for i := range f.Nodes {
		n := &f.Nodes[i]
		d := nodeData(f, n, all)
		rn, err := renderNode(f, root, n, d, tmpls, all, order, o)
		if err != nil {
			return nil, fmt.Errorf("render node %q: %w", n.Name, err)
		}
		out.Nodes[i] = rn
	}
	return out, nil
}

func nodeData(f *schema.Fleet, n *schema.FleetNode, all []Data) Data {
	p, _ := netip.ParsePrefix(n.Address) // validated by ParseFleet
	vars := maps.Clone(f.Vars)
	if vars == nil {
		vars = map[string]any{}
	}
	maps.Copy(vars, n.Vars)
	d := Data{Node: n.Name, Region: n.Region, Address: p.Addr().String(), CIDR: n.Address, Wave: n.Wave, Nodes: all}
	if all != nil {
		d.Vars = vars
	}
	return d
}

func renderNode(f *schema.Fleet, root *os.Root, n *schema.FleetNode, d Data, tmpls []*template.Template, all []Data, order []int, o Options) (Node, error) {
	keyPEM, err := statusKey(root, n.StatusKey)
	if err != nil {
		return Node{}, err
	}
	keyID, err := schema.StatusKeyID(keyPEM)
	if err != nil {
		return Node{}, fmt.Errorf("status_key: %w", err)
	}
	a := f.AttachOf(n)
	rn := schema.ReleaseNode{
		Name:         n.Name,
		Region:       n.Region,
		Wave:         n.Wave,
		StatusKeyID:  keyID,
		StatusKey:    keyPEM,
		AgeRecipient: n.AgeRecipient,
		Network:      schema.Network{Driver: a.Driver, Address: n.Address, Network: a.Network},
	}
	services := f.NodeServices(n)
	runs := map[string]bool{}
	for _, s := range services {
		runs[s.Name] = true
		if !f.Multi {
			pattern := s.Container
			if n.Container != "" {
				pattern = n.Container
			}
			c, err := renderContainer(f, s, pattern, n, d, all, order)
			if err != nil {
				return Node{}, err
			}
			rn.Container = &c
			rn.Image = s.ReleaseImageName()
			continue
		}
		sd := d
		sd.Service = s.Name
		c, err := renderContainer(f, s, s.Container, n, sd, all, order)
		if err != nil {
			return Node{}, fmt.Errorf("service %q: %w", s.Name, err)
		}
		for _, o := range rn.Services {
			if o.Container.Name == c.Name {
				return Node{}, fmt.Errorf("service %q: container name %q: already the name of service %q", s.Name, c.Name, o.Name)
			}
		}
		rn.Services = append(rn.Services, schema.NodeService{
			Name: s.Name, Image: s.ReleaseImageName(), DependsOn: slices.Clone(s.DependsOn),
			Attach: f.Attached(n, s), Container: c,
		})
	}

	var files []File
	var secrets map[string]string // loaded on first use
	for i, t := range f.Templates {
		service := t.Service
		if f.Multi && service == "" {
			service = f.Services[0].Name // the fleet's one service
		}
		if f.Multi && !runs[service] {
			continue // the node does not run the service the file is for
		}
		d := d
		d.Service = service
		used := false
		tmpls[i].Funcs(template.FuncMap{"secret": func(key string) (string, error) {
			used = true
			if secrets == nil {
				if o.Secrets == nil {
					return "", fmt.Errorf("secret %q: no secrets available to this render (pass the secrets identity)", key)
				}
				m, err := o.Secrets(n.Name)
				if err != nil {
					return "", err
				}
				if m == nil {
					m = map[string]string{}
				}
				secrets = m
			}
			v, ok := secrets[key]
			if !ok {
				return "", &MissingSecretError{Node: n.Name, Key: key}
			}
			return v, nil
		}})
		var buf bytes.Buffer
		w := &limitWriter{w: &buf, n: schema.MaxFileLength, max: schema.MaxFileLength}
		if err := tmpls[i].Execute(w, d); err != nil {
			var mse *MissingSecretError
			if errors.As(err, &mse) {
				return Node{}, fmt.Errorf("template %q: %w", t.Name, mse)
			}
			return Node{}, fmt.Errorf("template %q: %w", t.Name, explain(err))
		}
		target, err := execString("template target", t.Target, d)
		if err != nil {
			return Node{}, fmt.Errorf("template %q: %w", t.Name, err)
		}
		if err := schema.CheckAbsPath(target); err != nil {
			return Node{}, fmt.Errorf("template %q: target %q: %w", t.Name, target, err)
		}
		sum := sha256.Sum256(buf.Bytes())
		file := File{Path: t.Name, Target: target, Mode: t.Mode, Data: buf.Bytes(), SHA256: hex.EncodeToString(sum[:]), Secret: used}
		files = append(files, file)
		rn.Files = append(rn.Files, schema.File{Path: file.Path, Target: file.Target, SHA256: file.SHA256, Length: int64(len(file.Data)), Mode: file.Mode, Service: service})
	}
	return Node{Release: rn, Files: files}, nil
}

// runs reports whether node n runs service s.
func runs(n *schema.FleetNode, s *schema.Service) bool {
	return len(n.Services) == 0 || slices.Contains(n.Services, s.Name)
}

// renderContainer renders service s's literal container spec for node n,
// its name from the template pattern.
func renderContainer(f *schema.Fleet, s *schema.Service, pattern string, n *schema.FleetNode, d Data, all []Data, order []int) (schema.Container, error) {
	cname, err := execString("container name", pattern, d)
	if err != nil {
		return schema.Container{}, err
	}
	if err := schema.CheckName(cname); err != nil {
		return schema.Container{}, fmt.Errorf("container name: %w", err)
	}
	c := schema.Container{
		Name:       cname,
		Ports:      slices.Clone(s.Ports),
		Binds:      make([]string, 0, len(s.Binds)),
		Env:        maps.Clone(s.Env),
		Restart:    s.Restart,
		Command:    slices.Clone(s.Command),
		Entrypoint: slices.Clone(s.Entrypoint),
		Reload:     schema.Reload{Action: s.Reload.Action, Command: slices.Clone(s.Reload.Command)},
		Health:     s.Health,
	}
	c.Health.Command = slices.Clone(s.Health.Command)
	// Bind sources and file targets are templates too, so that several
	// nodes can share one host (a test or demo fleet) without sharing files.
	for _, b := range s.Binds {
		bind, err := execString("bind", b, d)
		if err != nil {
			return schema.Container{}, err
		}
		if _, err := schema.CheckBind(bind); err != nil {
			return schema.Container{}, fmt.Errorf("bind %q: %w", bind, err)
		}
		c.Binds = append(c.Binds, bind)
	}
	if len(c.Binds) == 0 {
		c.Binds = nil
	}
	if s.Network != "" {
		if c.Network, err = execString("network", s.Network, d); err != nil {
			return schema.Container{}, err
		}
		if err := schema.CheckServiceNetwork(c.Network); err != nil {
			return schema.Container{}, err
		}
	}
	if cs := s.Cluster; cs != nil {
		cl := &schema.Cluster{Show: slices.Clone(cs.Show), Format: cs.Format}
		if cl.Self, err = execString("cluster peer", cs.Peer, d); err != nil {
			return schema.Container{}, err
		}
		for _, j := range order {
			if all[j].Node == n.Name || !runs(&f.Nodes[j], s) {
				continue // peers are the other nodes running the service
			}
			peer, err := execString("cluster peer", cs.Peer, all[j])
			if err != nil {
				return schema.Container{}, fmt.Errorf("peer %q: %w", all[j].Node, err)
			}
			jd := d
			jd.Peer = peer
			argv := make([]string, len(cs.Join))
			for k, arg := range cs.Join {
				if argv[k], err = execString("cluster join", arg, jd); err != nil {
					return schema.Container{}, err
				}
			}
			cl.Peers = append(cl.Peers, peer)
			cl.Join = append(cl.Join, argv)
		}
		c.Cluster = cl
	}
	return c, nil
}

// noSecret stands in for secret until renderNode binds the node's own.
func noSecret(key string) (string, error) {
	return "", fmt.Errorf("secret %q: no node bound", key)
}

func execString(what, text string, d Data) (string, error) {
	t, err := template.New(what).Option("missingkey=error").Parse(text)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	var b strings.Builder
	if err := t.Execute(&limitWriter{w: &b, n: schema.MaxStringLen, max: schema.MaxStringLen}, d); err != nil {
		return "", fmt.Errorf("%s: %w", what, explain(err))
	}
	return b.String(), nil
}

var missingKey = regexp.MustCompile(`map has no entry for key "([^"]*)"`)

// explain turns text/template's missing-key error into one naming the variable.
func explain(err error) error {
	if m := missingKey.FindStringSubmatch(err.Error()); m != nil {
		return &UndefinedVariableError{Name: m[1]}
	}
	return err
}

// UndefinedVariableError reports a template variable that neither [vars]
// nor the node's vars define.
type UndefinedVariableError struct {
	Name string
}

func (e *UndefinedVariableError) Error() string {
	return fmt.Sprintf("variable %q is not defined", e.Name)
}

// statusKey returns the node's status public key PEM: inline, or read from
// the file it names.
func statusKey(root *os.Root, s string) (string, error) {
	if strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN") {
		return s, nil
	}
	b, err := readBounded(root, s, schema.MaxKeyPEMLen)
	if err != nil {
		return "", fmt.Errorf("status_key: %w", err)
	}
	return string(b), nil
}

func readBounded(root *os.Root, name string, max int64) ([]byte, error) {
	fh, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, max)
	}
	return b, nil
}

// limitWriter fails once more than n bytes are written, so a runaway
// template (a huge range) cannot exhaust memory.
type limitWriter struct {
	w      io.Writer
	n, max int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, fmt.Errorf("output larger than the %d bytes allowed", l.max)
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}
