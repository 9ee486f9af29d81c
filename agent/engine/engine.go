// Package engine is everything pullship-agent asks of the container engine.
//
// The agent depends only on the small [Engine] interface declared here; [Docker]
// adapts the Docker Engine API client to it, and package enginetest holds an
// in-memory fake for the agent's logic tests.
//
// Images are always identified by their ID, "sha256:<64 hex>", which is the
// digest of the image config that the signed release pins. Containers are run by
// that ID, never by tag: [Engine.LoadImage] strips the tags a tarball carries so
// that loading a release can never move a tag the host already uses.
package engine

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"time"
)

// Labels the agent puts on the containers it manages.
const (
	LabelNode    = "pullship.node"    // node name; Events watches containers carrying it
	LabelVersion = "pullship.version" // release version that created the container
)

// PrevSuffix is appended to a container's name while an upgrade keeps the
// previous container around for rollback.
const PrevSuffix = ".pullship-prev"

// MaxExecOutput bounds the combined stdout+stderr [Engine.Exec] keeps: the
// container is untrusted and may print without end.
const MaxExecOutput = 64 << 10

// ContainerSpec is what the agent asks the engine to run.
type ContainerSpec struct {
	Name          string
	Image         string   // image ID "sha256:<hex>", never a tag
	Cmd           []string // nil: the image's default
	Entrypoint    []string // nil: the image's default
	Env           []string // "KEY=value"
	Ports         []string // "1883:1883/tcp", "127.0.0.1:8888:8888", as docker run -p
	Binds         []string // "/host/path:/container/path[:ro]"
	RestartPolicy string   // "no" (or ""), "always", "unless-stopped", "on-failure"
	Labels        map[string]string
	Network       string // network mode or name; "" is the engine's default bridge
	Hostname      string
}

// ContainerState is what the engine reports about one container.
type ContainerState struct {
	ID           string
	Name         string // without the leading "/"
	ImageID      string
	Running      bool
	Status       string // "created", "running", "exited", "restarting", ...
	StartedAt    time.Time
	Labels       map[string]string
	RestartCount int
}

// ExecResult is the outcome of a command run inside a container.
type ExecResult struct {
	Output    []byte // stdout and stderr interleaved, at most MaxExecOutput bytes
	Truncated bool   // the command printed more than MaxExecOutput bytes
	ExitCode  int
}

// Event is a container lifecycle event of a container labelled [LabelNode].
type Event struct {
	Action      string // "start", "die" or "restart"
	ContainerID string
	Name        string
	Labels      map[string]string
	Time        time.Time
}

// Engine is the container engine as the agent sees it. Names are container
// names; images are IDs ("sha256:<64 hex>"). Methods are safe for concurrent use.
type Engine interface {
	// HasImage reports whether the image with this ID is present.
	HasImage(ctx context.Context, id string) (bool, error)
	// LoadImage streams a `docker save` tarball into the engine without
	// holding it in memory, with every tag it carries removed, and returns nil
	// only when the engine holds the image wantID afterwards. A tarball
	// whose image is not wantID yields *ImageMismatchError and leaves no new
	// image behind. Errors the engine reports inside its progress stream are
	// returned. opts may help the engine plan the load and spare the
	// tarball's writer work ([LoadOptions]); they steer nothing else.
	LoadImage(ctx context.Context, r io.Reader, wantID string, opts LoadOptions) error
	// RemoveImage deletes the image; a missing image is not an error, an image
	// used by a container is.
	RemoveImage(ctx context.Context, id string) error
	// ImagesInUse returns the IDs of the images of all containers, running or not.
	ImagesInUse(ctx context.Context) ([]string, error)

	// Inspect returns the container's state; found is false when no container
	// has this name.
	Inspect(ctx context.Context, name string) (st ContainerState, found bool, err error)
	// Run creates and starts a container. If it cannot be started it is removed
	// again, so Run either leaves a running container or none.
	Run(ctx context.Context, spec ContainerSpec) (id string, err error)
	// Start starts an existing, stopped container.
	Start(ctx context.Context, name string) error
	// Stop stops the container, killing it after timeout.
	Stop(ctx context.Context, name string, timeout time.Duration) error
	// Restart stops (killing after timeout) and starts the container.
	Restart(ctx context.Context, name string, timeout time.Duration) error
	// Remove stops the container (killing it after timeout) and removes it,
	// keeping its volumes. A missing container is not an error.
	Remove(ctx context.Context, name string, timeout time.Duration) error
	// Rename renames a container; an upgrade renames the old one to
	// name+PrevSuffix so that a rollback can rename it back.
	Rename(ctx context.Context, name, newName string) error
	// Exec runs argv in the running container and waits up to timeout for it.
	// A non-zero exit code is not an error; a timeout is (the process may be
	// left running in the container: the engine cannot kill an exec).
	Exec(ctx context.Context, name string, argv []string, timeout time.Duration) (ExecResult, error)
	// Events streams start, die and restart events of containers labelled
	// LabelNode until ctx ends or the stream breaks. The error channel then
	// yields one error (ctx.Err() on cancellation) and both channels are
	// closed; the caller re-subscribes and re-reads state, since events
	// during the gap are lost.
	Events(ctx context.Context) (<-chan Event, <-chan error)

	// EnsureNetwork creates the user-defined bridge network with this IPv4
	// subnet (CIDR) if it does not exist. An existing network with another
	// driver or subnet is an error. An empty subnet takes the engine's
	// choice, and any subnet of an existing bridge network.
	EnsureNetwork(ctx context.Context, network, subnet string) error
	// ConnectNetwork attaches the container to the network with a fixed IPv4
	// address; the engine keeps it across container restarts. Reconnects when
	// the container is attached with another address; no-op when attached
	// with this one.
	ConnectNetwork(ctx context.Context, network, container, ipv4 string) error
	// Connected returns the container's IPv4 address on the network and
	// whether it is attached at all.
	Connected(ctx context.Context, container, network string) (ip string, ok bool, err error)
}

// LoadOptions are what a caller of [Engine.LoadImage] may know of the
// tarball ahead, and how its writer can save work.
type LoadOptions struct {
	// Sizes, when not nil, gives the sizes of the tarball's files by path,
	// known before they stream (pullship's signed image index): an engine
	// may plan its load by them. They steer nothing else; the tarball's own
	// headers are what is loaded.
	Sizes map[string]int64
	// Omit, when not nil, is where the tarball's writer learns which files
	// the engine does not need (the layers it holds): the writer may leave
	// them out (see [Omit]).
	Omit *Omit
}

// ImageMismatchError reports that a loaded tarball did not hold the image the
// release pins.
type ImageMismatchError struct {
	Want string // image ID the caller asked for
	Got  string // config digest (or engine image ID) actually found
}

func (e *ImageMismatchError) Error() string {
	return fmt.Sprintf("load image %s: tarball holds image %s instead; refusing it", e.Want, e.Got)
}

var imageIDRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidImageID reports whether id has the form "sha256:<64 lowercase hex>".
func ValidImageID(id string) bool { return imageIDRe.MatchString(id) }

// ValidRestartPolicy reports whether p is a restart policy ContainerSpec accepts.
func ValidRestartPolicy(p string) bool {
	switch p {
	case "", "no", "always", "unless-stopped", "on-failure":
		return true
	}
	return false
}
