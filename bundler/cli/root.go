// Package cli is the pullship command line: one file per command
// (cmd_<verb>.go), each a thin layer that parses flags and calls the bundler
// or schema package that does the work. main only runs Execute and maps its
// error to an exit code.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes of pullship, listed in its --help.
const (
	ExitOK       = 0 // success
	ExitFailure  = 1 // any other failure
	ExitUsage    = 2 // bad flags or arguments
	ExitVerify   = 3 // a signature, digest or trust check failed
	ExitNoChange = 4 // release: nothing changed since the current release
)

const exitCodeHelp = `
Exit codes:
  0  success
  1  failure
  2  bad flags or arguments
  3  verification failed (signature, digest, trust root)
  4  nothing changed (release identical to the current one)
`

// ExitError carries the exit code a failure maps to.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// withCode wraps err so that main exits with code.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &ExitError{Code: code, Err: err}
}

// Env is what a command reads and writes besides its flags; tests replace it.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// DefaultEnv is the process's own standard streams and environment.
func DefaultEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// NewRoot builds the pullship command tree.
func NewRoot(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "pullship",
		Short: "Cut signed releases of a containerised service and watch a fleet converge on them",
		Long: `pullship is the release side of a GitOps pull agent. A release is one signed git
commit holding a container image (as content-addressed chunks) and the exact
rendered config of every node; pullship-agent on each host pulls, verifies and
applies it, and reports back to git.` + "\n" + exitCodeHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return withCode(ExitUsage, err) })
	for _, add := range commands {
		root.AddCommand(add(env))
	}
	return root
}

// commands is filled by each cmd_<verb>.go file's init.
var commands []func(Env) *cobra.Command

// Main runs pullship with args and returns the process exit code.
func Main(env Env, args []string) int {
	root := NewRoot(env)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(env.Stderr, "pullship: %v\n", err)
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return ExitFailure
}
