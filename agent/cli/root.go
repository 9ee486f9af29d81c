// Package cli is the pullship-agent command line: one file per command
// (cmd_<verb>.go). main only runs Main and exits with its code.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes of pullship-agent, listed in its --help.
const (
	ExitOK          = 0  // success; for once: converged on a new release
	ExitFailure     = 1  // any other failure; for once: the release failed and was rolled back
	ExitUsage       = 2  // bad flags or arguments
	ExitVerify      = 3  // a signature, digest or trust check failed; nothing was applied
	ExitNothingToDo = 10 // once: already on the newest release, nothing to do
)

const exitCodeHelp = `
Exit codes:
  0   success (once: converged on a new release)
  1   failure (once: the release failed health checks and was rolled back)
  2   bad flags or arguments
  3   verification failed; nothing was applied
  10  once: nothing to do, already on the newest release
`

// ExitError carries the exit code a failure maps to.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit code %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

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

// NewRoot builds the pullship-agent command tree.
func NewRoot(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "pullship-agent",
		Short: "Make this host converge on the newest signed pullship release",
		Long: `pullship-agent pulls signed releases from git, verifies them against a pinned
trust root, loads the image into the local Docker engine, applies each node's
config, keeps its network address attached, checks health (rolling back on
failure) and reports what it sees as signed status commits.` + "\n" + exitCodeHelp,
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

var commands []func(Env) *cobra.Command

// Main runs pullship-agent with args and returns the process exit code.
func Main(env Env, args []string) int {
	root := NewRoot(env)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) && ee.Err == nil {
		return ee.Code // a result, not a failure (once: nothing to do)
	}
	fmt.Fprintf(env.Stderr, "pullship-agent: %v\n", err)
	if ee != nil {
		return ee.Code
	}
	return ExitFailure
}
