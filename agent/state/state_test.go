package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.Load()
	if err != nil || st.Version != 0 || len(st.Nodes) != 0 {
		t.Fatalf("empty state: %+v %v", st, err)
	}
	st.Version = 7
	st.ManifestSHA256 = strings.Repeat("a", 64)
	st.Nodes["cn"] = &Node{Applied: 7, Image: "sha256:" + strings.Repeat("b", 64), AppliedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Failed: 6, FailedError: "health: no pong"}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 7 || got.Nodes["cn"].Failed != 6 || !got.Nodes["cn"].AppliedAt.Equal(st.Nodes["cn"].AppliedAt) {
		t.Fatalf("round trip: %+v", got.Nodes["cn"])
	}
	if fi, err := os.Stat(filepath.Join(dir, "state.toml")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state.toml mode: %v %v", fi, err)
	}
}

func TestJournal(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if j, err := s.Journal("cn"); j != nil || err != nil {
		t.Fatalf("no journal: %v %v", j, err)
	}
	j := &Journal{Node: "cn", Version: 3, Step: StepFiles, PrevImage: "sha256:x", Files: []FileBackup{{Target: "/etc/a", Backup: "b", Existed: true, Mode: 0o644}}}
	if err := s.WriteJournal(j); err != nil {
		t.Fatal(err)
	}
	got, err := s.Journal("cn")
	if err != nil || got.Step != StepFiles || len(got.Files) != 1 || got.Files[0].Mode != 0o644 {
		t.Fatalf("journal: %+v %v", got, err)
	}
	if err := s.ClearJournal("cn"); err != nil {
		t.Fatal(err)
	}
	if j, _ := s.Journal("cn"); j != nil {
		t.Fatal("journal not cleared")
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	s.Close()
	s2, err := Open(dir)
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	s2.Close()
}

func TestCorruptStateIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "state.toml"), []byte("version = \"x\"\n"), 0o600)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Load(); err == nil || !strings.Contains(err.Error(), "state.toml") {
		t.Fatalf("corrupt state: %v", err)
	}
}
