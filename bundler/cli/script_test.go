package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/pullship/pullship/bundler/image/imagetest"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// TestMain lets the script tests run pullship in-process: testscript puts a
// copy of the test binary on the scripts' PATH under the name pullship.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"pullship": func() { os.Exit(Main(DefaultEnv(), os.Args[1:])) },
	})
}

// TestScripts runs testdata/*.txtar. Each script gets the schema package's
// golden signature vectors in $WORK/vectors.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(e *testscript.Env) error {
			return copyDir(filepath.Join("..", "..", "schema", "testdata", "sig"), filepath.Join(e.WorkDir, "vectors"))
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":     cmdExits,
			"perm":      cmdPerm,
			"mkimage":   cmdMkimage,
			"gitdaemon": cmdGitDaemon,
			"cutproxy":  cmdCutProxy,
		},
		Condition: func(cond string) (bool, error) {
			if cond == "openssl" {
				_, err := exec.LookPath("openssl")
				return err == nil, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
	})
}

// cmdExits runs a program and checks its exit code: exits CODE PROG ARGS...
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: bad code %q", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exits: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}

// cmdPerm checks a file's permission bits: perm 0600 FILE
func cmdPerm(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: perm MODE FILE")
	}
	want, err := strconv.ParseUint(args[0], 8, 32)
	if err != nil {
		ts.Fatalf("perm: bad mode %q", args[0])
	}
	fi, err := os.Stat(ts.MkAbs(args[1]))
	ts.Check(err)
	if got := fi.Mode().Perm(); got != os.FileMode(want) {
		ts.Fatalf("%s has mode %#o, want %#o", args[1], got, want)
	}
}

func copyDir(from, to string) error {
	return filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
}

// cmdMkimage writes a tiny docker-save tarball: mkimage OUT.tar CONTENT
// (one layer holding /app with CONTENT), so scripts can release an image.
func cmdMkimage(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkimage OUT.tar CONTENT")
	}
	_, err := imagetest.WriteFile(ts.MkAbs(args[0]), imagetest.Image{
		Layers:   [][]imagetest.File{{{Path: "app", Data: []byte(args[1])}}},
		Cmd:      []string{"/app"},
		RepoTags: []string{"example/app:1"},
	})
	ts.Check(err)
}

// cmdGitDaemon serves the repositories under DIR with git daemon until the
// script ends and sets $VAR to its git:// base URL: gitdaemon VAR DIR
func cmdGitDaemon(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: gitdaemon VAR DIR")
	}
	out, err := exec.Command("git", "--exec-path").Output()
	ts.Check(err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	l.Close()
	base := ts.MkAbs(args[1])
	cmd := exec.Command(filepath.Join(strings.TrimSpace(string(out)), "git-daemon"), "--export-all", "--reuseaddr",
		"--base-path="+base, "--listen=127.0.0.1", "--port="+port, base)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+base)
	ts.Check(cmd.Start())
	ts.Defer(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			ts.Fatalf("git daemon did not listen on %s: %v", addr, err)
		}
	}
	ts.Setenv(args[0], "git://"+addr)
}

// cmdCutProxy puts a proxy in front of URL that cuts the Nth pack it
// forwards, and every later one, mid-pack, and sets $VAR to the proxy's
// URL: cutproxy VAR URL N
func cmdCutProxy(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: cutproxy VAR URL N")
	}
	n, err := strconv.Atoi(args[2])
	ts.Check(err)
	p, err := gittest.NewCutProxy(args[1], n)
	ts.Check(err)
	ts.Defer(p.Close)
	ts.Setenv(args[0], p.URL)
}
