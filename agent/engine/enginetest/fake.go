// Package enginetest helps test code that uses package engine: Fake, an
// in-memory [engine.Engine] for the agent's logic tests, and WriteImage and
// Pingsrv, which build small runnable images without a registry for tests
// against the real engine.
package enginetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pullship/pullship/agent/engine"
)

// Fake is an in-memory engine. It behaves like the real one where the agent
// can tell: LoadImage reads the whole tarball and derives the image ID from
// the config it names, names are unique, a fixed address survives restarts,
// an image in use by a container cannot be removed, and Exec finds its
// program in the image's files (through the PATH of the image and the
// container) or fails as runc does, with exit code 126. A program that is
// found runs as ExecFunc says. The zero value is not usable; call NewFake.
type Fake struct {
	// ExecFunc answers Exec of a program present in the container's image;
	// ctx ends at the exec's timeout. nil answers every such command with
	// exit code 0 and no output.
	ExecFunc func(ctx context.Context, name string, argv []string) (engine.ExecResult, error)
	// Fail, when set, is consulted first by every method with the method's
	// name ("LoadImage", "Run", ...) and the object; a non-nil error is
	// returned as the method's failure (fault injection).
	Fail func(method, object string) error

	mu         sync.Mutex
	images     map[string]*fakeImage
	containers map[string]*fakeContainer
	networks   map[string]string // name → subnet
	subs       []chan engine.Event
	seq        int
	now        func() time.Time
}

// fakeImage is what the fake knows of a loaded image: the paths of its
// files and symbolic links (without leading "/") and its configured
// environment.
type fakeImage struct {
	files map[string]bool
	env   []string
}

type fakeContainer struct {
	spec  engine.ContainerSpec
	state engine.ContainerState
	addrs map[string]string // network → address
}

var _ engine.Engine = (*Fake)(nil)

// NewFake returns an empty fake engine.
func NewFake() *Fake {
	return &Fake{
		images:     map[string]*fakeImage{},
		containers: map[string]*fakeContainer{},
		networks:   map[string]string{},
		now:        time.Now,
	}
}

// AddImage makes an image present without loading a tarball; files are
// the paths of its files (without leading "/"), where Exec finds programs.
func (f *Fake) AddImage(id string, files ...string) {
	img := &fakeImage{files: map[string]bool{}}
	for _, p := range files {
		img.files[path.Clean(p)] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[id] = img
}

// Images returns the IDs of the images present, sorted.
func (f *Fake) Images() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.images))
}

// Spec returns the spec a container was run with.
func (f *Fake) Spec(name string) (engine.ContainerSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[name]
	if !ok {
		return engine.ContainerSpec{}, false
	}
	return c.spec, true
}

// Names returns the names of all containers, sorted.
func (f *Fake) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.containers))
}

// Crash stops a container behind the agent's back, as a crash would, and
// emits "die".
func (f *Fake) Crash(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[name]; ok && c.state.Running {
		c.state.Running, c.state.Status = false, "exited"
		f.emit(c, "die")
	}
}

func (f *Fake) fail(method, object string) error {
	if f.Fail == nil {
		return nil
	}
	if err := f.Fail(method, object); err != nil {
		return fmt.Errorf("fake %s %s: %w", method, object, err)
	}
	return nil
}

// emit sends an event to every subscriber; callers hold f.mu. Slow
// subscribers lose events, as with a broken real stream.
func (f *Fake) emit(c *fakeContainer, action string) {
	if c.spec.Labels[engine.LabelNode] == "" {
		return
	}
	ev := engine.Event{Action: action, ContainerID: c.state.ID, Name: c.state.Name, Labels: maps.Clone(c.spec.Labels), Time: f.now()}
	for _, s := range f.subs {
		select {
		case s <- ev:
		default:
		}
	}
}

// HasImage implements [engine.Engine].
func (f *Fake) HasImage(ctx context.Context, id string) (bool, error) {
	if !engine.ValidImageID(id) {
		return false, fmt.Errorf("image %q: not an image ID", id)
	}
	if err := f.fail("HasImage", id); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.images[id] != nil, nil
}

// LoadImage implements [engine.Engine]: it reads the tarball (hashing, not
// keeping, its entries; listing the files of those that are layer tars) and
// takes the digest of the config that manifest.json names as the image ID.
// opts are not used: the fake needs every entry.
func (f *Fake) LoadImage(ctx context.Context, r io.Reader, wantID string, opts engine.LoadOptions) error {
	if err := f.fail("LoadImage", wantID); err != nil {
		return err
	}
	digests := map[string]string{}
	small := map[string][]byte{} // entries that may be the config
	layers := map[string][]string{}
	var manifest []struct {
		Config string
		Layers []string
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("load image %s: %w", wantID, err)
		}
		name := path.Clean(hdr.Name)
		if name == "manifest.json" {
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&manifest); err != nil {
				return fmt.Errorf("load image %s: manifest.json: %w", wantID, err)
			}
			continue
		}
		h := sha256.New()
		var in io.Reader = io.TeeReader(tr, h)
		var buf bytes.Buffer
		if hdr.Size <= 1<<20 {
			in = io.TeeReader(in, &buf)
		}
		layers[name] = layerFiles(in)
		if _, err := io.Copy(io.Discard, in); err != nil {
			return fmt.Errorf("load image %s: %w", wantID, err)
		}
		digests[name] = "sha256:" + hex.EncodeToString(h.Sum(nil))
		if hdr.Size <= 1<<20 {
			small[name] = buf.Bytes()
		}
	}
	if len(manifest) != 1 {
		return fmt.Errorf("load image %s: manifest.json lists %d images, want 1", wantID, len(manifest))
	}
	cfgName := path.Clean(manifest[0].Config)
	got := digests[cfgName]
	if got == "" {
		return fmt.Errorf("load image %s: config %q missing", wantID, manifest[0].Config)
	}
	if got != wantID {
		return &engine.ImageMismatchError{Want: wantID, Got: got}
	}
	var cfg struct{ Config struct{ Env []string } }
	if err := json.Unmarshal(small[cfgName], &cfg); err != nil {
		return fmt.Errorf("load image %s: config: %w", wantID, err)
	}
	var files []string
	for _, l := range manifest[0].Layers {
		files = append(files, layers[path.Clean(l)]...)
	}
	f.AddImage(got, files...)
	f.mu.Lock()
	f.images[got].env = cfg.Config.Env
	f.mu.Unlock()
	return nil
}

// layerFiles lists the regular files and symbolic links of a layer tar read
// from r; nothing when r is not a tar.
func layerFiles(r io.Reader) []string {
	var files []string
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return files
		}
		if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeSymlink {
			files = append(files, path.Clean(strings.TrimPrefix(hdr.Name, "/")))
		}
	}
}

// RemoveImage implements [engine.Engine].
func (f *Fake) RemoveImage(ctx context.Context, id string) error {
	if err := f.fail("RemoveImage", id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.containers {
		if c.state.ImageID == id {
			return fmt.Errorf("remove image %s: in use by container %s", id, c.state.Name)
		}
	}
	delete(f.images, id)
	return nil
}

// ImagesInUse implements [engine.Engine].
func (f *Fake) ImagesInUse(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, c := range f.containers {
		if !slices.Contains(ids, c.state.ImageID) {
			ids = append(ids, c.state.ImageID)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Inspect implements [engine.Engine].
func (f *Fake) Inspect(ctx context.Context, name string) (engine.ContainerState, bool, error) {
	if err := f.fail("Inspect", name); err != nil {
		return engine.ContainerState{}, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[name]
	if !ok {
		return engine.ContainerState{}, false, nil
	}
	st := c.state
	st.Labels = maps.Clone(st.Labels)
	return st, true, nil
}

// Run implements [engine.Engine].
func (f *Fake) Run(ctx context.Context, spec engine.ContainerSpec) (string, error) {
	if err := f.fail("Run", spec.Name); err != nil {
		return "", err
	}
	if spec.Name == "" || !engine.ValidRestartPolicy(spec.RestartPolicy) {
		return "", fmt.Errorf("run container %q: bad name or restart policy %q", spec.Name, spec.RestartPolicy)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.images[spec.Image] == nil {
		return "", fmt.Errorf("run container %s: image %s not loaded", spec.Name, spec.Image)
	}
	if _, ok := f.containers[spec.Name]; ok {
		return "", fmt.Errorf("create container %s: name already in use", spec.Name)
	}
	if _, ok := f.networks[spec.Network]; spec.Network != "" && !ok {
		return "", fmt.Errorf("create container %s: network %s not found", spec.Name, spec.Network)
	}
	f.seq++
	id := fmt.Sprintf("%064x", f.seq)
	c := &fakeContainer{spec: spec, addrs: map[string]string{}, state: engine.ContainerState{
		ID: id, Name: spec.Name, ImageID: spec.Image, Running: true, Status: "running",
		StartedAt: f.now(), Labels: maps.Clone(spec.Labels),
	}}
	if spec.Network != "" {
		// On the network it is created on, with an address of the
		// engine's choosing.
		c.addrs[spec.Network] = fmt.Sprintf("172.31.%d.%d", f.seq/250%256, f.seq%250+1)
	}
	f.containers[spec.Name] = c
	f.emit(c, "start")
	return id, nil
}

func (f *Fake) get(name string) (*fakeContainer, error) {
	c, ok := f.containers[name]
	if !ok {
		return nil, fmt.Errorf("container %s: no such container", name)
	}
	return c, nil
}

// Start implements [engine.Engine].
func (f *Fake) Start(ctx context.Context, name string) error {
	if err := f.fail("Start", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(name)
	if err != nil {
		return fmt.Errorf("start %w", err)
	}
	if !c.state.Running {
		c.state.Running, c.state.Status, c.state.StartedAt = true, "running", f.now()
		f.emit(c, "start")
	}
	return nil
}

// Stop implements [engine.Engine].
func (f *Fake) Stop(ctx context.Context, name string, timeout time.Duration) error {
	if err := f.fail("Stop", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(name)
	if err != nil {
		return fmt.Errorf("stop %w", err)
	}
	if c.state.Running {
		c.state.Running, c.state.Status = false, "exited"
		f.emit(c, "die")
	}
	return nil
}

// Restart implements [engine.Engine].
func (f *Fake) Restart(ctx context.Context, name string, timeout time.Duration) error {
	if err := f.fail("Restart", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(name)
	if err != nil {
		return fmt.Errorf("restart %w", err)
	}
	if c.state.Running {
		f.emit(c, "die")
	}
	c.state.Running, c.state.Status, c.state.StartedAt = true, "running", f.now()
	f.emit(c, "start")
	f.emit(c, "restart")
	return nil
}

// Remove implements [engine.Engine].
func (f *Fake) Remove(ctx context.Context, name string, timeout time.Duration) error {
	if err := f.fail("Remove", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[name]; ok && c.state.Running {
		f.emit(c, "die")
	}
	delete(f.containers, name)
	return nil
}

// Rename implements [engine.Engine].
func (f *Fake) Rename(ctx context.Context, name, newName string) error {
	if err := f.fail("Rename", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(name)
	if err != nil {
		return fmt.Errorf("rename %w", err)
	}
	if _, taken := f.containers[newName]; taken {
		return fmt.Errorf("rename container %s to %s: name already in use", name, newName)
	}
	delete(f.containers, name)
	c.spec.Name, c.state.Name = newName, newName
	f.containers[newName] = c
	return nil
}

// Exec implements [engine.Engine].
func (f *Fake) Exec(ctx context.Context, name string, argv []string, timeout time.Duration) (engine.ExecResult, error) {
	if err := f.fail("Exec", name); err != nil {
		return engine.ExecResult{}, err
	}
	if len(argv) == 0 {
		return engine.ExecResult{}, fmt.Errorf("exec in container %s: empty command", name)
	}
	f.mu.Lock()
	c, err := f.get(name)
	var running, found bool
	if err == nil {
		running = c.state.Running
		found = f.images[c.state.ImageID].find(argv[0], c.spec.Env)
	}
	exec := f.ExecFunc
	f.mu.Unlock()
	if err != nil {
		return engine.ExecResult{}, fmt.Errorf("exec %q in %w", argv[0], err)
	}
	if !running {
		return engine.ExecResult{}, fmt.Errorf("exec %q in container %s: container is not running", argv[0], name)
	}
	if !found {
		// What runc answers, through a real engine, for a missing program.
		return engine.ExecResult{ExitCode: 126, Output: fmt.Appendf(nil,
			"OCI runtime exec failed: exec failed: unable to start container process: exec: %q: no such file or directory: unknown\r\n", argv[0])}, nil
	}
	if exec == nil {
		return engine.ExecResult{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := exec(ctx, name, argv)
	if ctx.Err() != nil {
		return res, fmt.Errorf("exec %q in container %s: no exit within %v: %w", argv[0], name, timeout, ctx.Err())
	}
	if len(res.Output) > engine.MaxExecOutput {
		res.Output, res.Truncated = res.Output[:engine.MaxExecOutput], true
	}
	return res, err
}

// defaultPath is the PATH runc uses when neither the image nor the
// container sets one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// find reports whether program resolves to a file of the image, as the
// runtime resolves an exec's argv[0]: a path as it is, a bare name through
// PATH (the container's env over the image's).
func (img *fakeImage) find(program string, env []string) bool {
	if img == nil {
		return false
	}
	if strings.Contains(program, "/") {
		return img.files[path.Clean(strings.TrimPrefix(program, "/"))]
	}
	dirs := defaultPath
	for _, e := range append(slices.Clone(img.env), env...) {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			dirs = v
		}
	}
	for _, d := range strings.Split(dirs, ":") {
		if img.files[path.Clean(strings.TrimPrefix(path.Join(d, program), "/"))] {
			return true
		}
	}
	return false
}

// Events implements [engine.Engine]. Events are buffered (64); beyond that
// they are dropped, like events lost while a real stream is broken.
func (f *Fake) Events(ctx context.Context) (<-chan engine.Event, <-chan error) {
	in := make(chan engine.Event, 64)
	out := make(chan engine.Event)
	errs := make(chan error, 1)
	f.mu.Lock()
	f.subs = append(f.subs, in)
	f.mu.Unlock()
	go func() {
		defer close(out)
		defer close(errs)
		defer func() {
			f.mu.Lock()
			f.subs = slices.DeleteFunc(f.subs, func(c chan engine.Event) bool { return c == in })
			f.mu.Unlock()
		}()
		for {
			select {
			case ev := <-in:
				select {
				case out <- ev:
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				}
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			}
		}
	}()
	return out, errs
}

// EnsureNetwork implements [engine.Engine].
func (f *Fake) EnsureNetwork(ctx context.Context, network, subnet string) error {
	if err := f.fail("EnsureNetwork", network); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.networks[network]
	switch {
	case ok && subnet == "":
		return nil // any subnet will do
	case ok && cur != subnet:
		return fmt.Errorf("network %s exists without subnet %s", network, subnet)
	}
	f.networks[network] = subnet
	return nil
}

// ConnectNetwork implements [engine.Engine].
func (f *Fake) ConnectNetwork(ctx context.Context, network, name, ipv4 string) error {
	if err := f.fail("ConnectNetwork", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.networks[network]; !ok {
		return fmt.Errorf("connect container %s: network %s not found", name, network)
	}
	c, err := f.get(name)
	if err != nil {
		return fmt.Errorf("connect %w", err)
	}
	c.addrs[network] = ipv4
	return nil
}

// Connected implements [engine.Engine].
func (f *Fake) Connected(ctx context.Context, name, network string) (string, bool, error) {
	if err := f.fail("Connected", name); err != nil {
		return "", false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(name)
	if err != nil {
		return "", false, fmt.Errorf("inspect %w", err)
	}
	ip, ok := c.addrs[network]
	return ip, ok, nil
}
