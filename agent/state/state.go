// Package state is what pullship-agent remembers on the host, in its state
// directory: the highest release version it ever accepted (so a replayed or
// rolled-back release is refused even after a restart), what each node has
// applied or failed, and a journal per node that says which step of an apply
// was reached, so that a crash at any instant is finished or undone at the
// next start. Every file is replaced by rename after an fsync.
package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/pullship/pullship/bundler/shared/atomicfile"
	"github.com/pullship/pullship/schema"
)

// State is the agent's persisted memory (state.toml).
type State struct {
	// Version is the highest release version accepted; ManifestSHA256 the
	// sha256 of that release.toml. A release with a lower version, or the
	// same version with other bytes, is refused.
	Version        int64  `toml:"version"`
	ManifestSHA256 string `toml:"manifest_sha256"`
	// RootVersion is the newest trust root version followed.
	RootVersion int64 `toml:"root_version"`
	// Nodes is each node's applied and failed versions.
	Nodes map[string]*Node `toml:"nodes"`
}

// Node is what one node has applied.
type Node struct {
	Applied        int64  `toml:"applied"`
	ManifestSHA256 string `toml:"manifest_sha256"`
	// Commit is the release commit of Applied: the release the node runs,
	// whose services, health checks and files its status follows (after a
	// rollback, not the newest accepted release). Empty in state written
	// before it was recorded.
	Commit    string `toml:"commit,omitempty"`
	Image     string `toml:"image"`
	PrevImage string `toml:"prev_image"` // the image before, kept for a manual rollback
	// Images and PrevImages are every image of a node of several services
	// (Image and PrevImage then name the first's).
	Images     []string `toml:"images,omitempty"`
	PrevImages []string `toml:"prev_images,omitempty"`
	// Containers are the names of the containers of the release applied:
	// a later release without one of them removes it.
	Containers []string  `toml:"containers,omitempty"`
	AppliedAt  time.Time `toml:"applied_at"`
	// Failed is the newest version that failed its health check here and
	// was rolled back; it is not retried until a newer release arrives.
	Failed      int64  `toml:"failed"`
	FailedError string `toml:"failed_error"`
}

// Journal records how far an apply of one node got (journal-<node>.toml).
type Journal struct {
	Node    string `toml:"node"`
	Version int64  `toml:"version"`
	Step    Step   `toml:"step"`
	// PrevImage and PrevContainer describe what ran before, to roll back to.
	PrevImage     string `toml:"prev_image"`
	PrevContainer string `toml:"prev_container"`
	// Recreate is true when the apply replaces the container (the previous
	// one is kept, renamed, until the new one is healthy); false when it
	// reloads the running container.
	Recreate bool `toml:"recreate"`
	// Files are the node files this apply replaces, with their backups.
	Files []FileBackup `toml:"file"`
	// Services are the node's containers this apply recreates or reloads,
	// in start order (one for a one-service node, which also fills the
	// fields above); rollback undoes them in reverse. A journal without
	// them was written by an agent that knew one container per node.
	Services []ServiceJournal `toml:"service,omitempty"`
}

// ServiceJournal is what an apply does to one service's container, and
// what restores it.
type ServiceJournal struct {
	Name      string `toml:"name"`      // the service ("" for a one-service node)
	Container string `toml:"container"` // the container's name
	// PrevImage and PrevContainer describe what ran before, to roll back to.
	PrevImage     string `toml:"prev_image"`
	PrevContainer string `toml:"prev_container"`
	// Recreate: the container is replaced (the previous one kept, renamed,
	// until every service is healthy). Otherwise, Reload: it is reloaded
	// because its files changed, and reloaded again if they are restored.
	Recreate bool          `toml:"recreate"`
	Reload   bool          `toml:"reload"`
	Action   schema.Reload `toml:"action"` // its reload action (the release's)
	// Drop: the service left the node. Its container is stopped and kept,
	// renamed, until every remaining service is healthy, then removed
	// (Recreate is set too: rollback puts it back the same way).
	Drop bool `toml:"drop,omitempty"`
}

// FileBackup is one replaced file: Backup holds the previous content when
// Existed is true.
type FileBackup struct {
	Target  string `toml:"target"`
	Backup  string `toml:"backup"`
	Existed bool   `toml:"existed"`
	Mode    uint32 `toml:"mode"`
	// Service is the service whose file it is ("" on a one-service node).
	Service string `toml:"service,omitempty"`
}

// Step is an apply step, in order.
type Step string

// The steps of an apply, as recorded in the journal before each is done.
const (
	StepBegin     Step = "begin"     // backups being taken; nothing changed yet
	StepFiles     Step = "files"     // node files being replaced
	StepContainer Step = "container" // container being recreated or reloaded
	StepHealth    Step = "health"    // health being checked
	StepRollback  Step = "rollback"  // restoring the previous release
	// StepRollbackContainer: files restored and their backups (which may
	// hold decrypted secrets) removed; the container being restored.
	StepRollbackContainer Step = "rollback-container"
	StepDone              Step = "done"       // applied and healthy
	StepRolledBack        Step = "rolledback" // previous release restored
)

// Store is an agent state directory, locked against a second agent.
type Store struct {
	dir  string
	lock *os.File
}

// ErrLocked means another pullship-agent holds the state directory.
var ErrLocked = errors.New("state directory is in use by another pullship-agent")

// Open creates (0700) or opens the state directory and locks it.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("open state dir %s: %w", dir, ErrLocked)
	}
	return &Store{dir: dir, lock: f}, nil
}

// Close releases the lock.
func (s *Store) Close() error { return s.lock.Close() }

// Path is a path inside the state directory.
func (s *Store) Path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

// Load reads state.toml; a missing file is the empty state.
func (s *Store) Load() (*State, error) {
	st := &State{Nodes: map[string]*Node{}}
	if err := s.read("state.toml", st); err != nil {
		return nil, err
	}
	if st.Nodes == nil {
		st.Nodes = map[string]*Node{}
	}
	return st, nil
}

// Save replaces state.toml.
func (s *Store) Save(st *State) error { return s.write("state.toml", st) }

// Journal reads node's journal; nil when there is none.
func (s *Store) Journal(node string) (*Journal, error) {
	var j Journal
	name := "journal-" + node + ".toml"
	if _, err := os.Stat(s.Path(name)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err := s.read(name, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// WriteJournal records j durably before the step it names is done.
func (s *Store) WriteJournal(j *Journal) error {
	if err := s.write("journal-"+j.Node+".toml", j); err != nil {
		return err
	}
	if h := TestHookJournal; h != nil {
		h(s.dir, j.Step)
	}
	return nil
}

// TestHookJournal, when not nil, is called right after each journal write
// with the state directory and the step journalled. Only tests set it: the
// crash-safety tests stop the agent there (a SIGKILL of a test binary
// acting as pullship-agent, or the end of an in-process pass). Nothing in
// pullship-agent sets it, and no flag or environment variable can.
var TestHookJournal func(dir string, step Step)

// ClearJournal removes node's journal once its apply is finished.
func (s *Store) ClearJournal(node string) error {
	return atomicfile.Remove(s.Path("journal-" + node + ".toml"))
}

func (s *Store) read(name string, v any) error {
	data, err := os.ReadFile(s.Path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if err := schema.DecodeStrict(s.Path(name), data, v); err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	return nil
}

func (s *Store) write(name string, v any) error {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(v); err != nil {
		return fmt.Errorf("write state %s: %w", name, err)
	}
	return atomicfile.WriteFile(s.Path(name), &buf, 0o600)
}
