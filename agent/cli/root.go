// Package cli is the pullship-agent command line: one file per command
// (cmd_<verb>.go), each binding its flags to an options struct and calling
// its runX function; the commands are listed in [commands] and errors map
// to exit codes in the one table [exitCodes]. It uses the standard flag
// package, not a command-line framework, so that the agent links no
// text/template. main only runs [Main] and exits with its code.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/bundler/shared/cliutil"
)

// Env is what a command reads and writes besides its flags; tests replace it.
type Env = cliutil.Env

// DefaultEnv is the process's own standard streams and environment.
func DefaultEnv() Env { return cliutil.DefaultEnv() }

// Exit codes of pullship-agent, listed in its --help.
const (
	ExitOK          = cliutil.ExitOK      // success; for once: converged on a new release
	ExitFailure     = cliutil.ExitFailure // any other failure; for once: the release failed and was rolled back
	ExitUsage       = cliutil.ExitUsage   // bad flags, arguments or agent.toml
	ExitRefused     = cliutil.ExitRefused // refused by verification; nothing was applied
	ExitNothingToDo = 10                  // once: already on the newest release, nothing to do
)

// errNothingToDo is once's result when every node is on the newest release.
var errNothingToDo = errors.New("nothing to do")

// exitCodes is pullship-agent's one error-to-exit-code table.
var exitCodes = cliutil.Codes{
	{Code: ExitOK, Meaning: "success (once: converged on a new release)"},
	{Code: ExitFailure, Meaning: "failure: no remote reachable (each named), I/O, the engine; once: rolled back after failed health checks"},
	{Code: ExitUsage, Meaning: "bad flags, arguments or agent.toml", Match: cliutil.IsUsage},
	{Code: ExitRefused, Meaning: "refused: a signature, digest, trust root, freshness or rollback check failed; nothing was applied", Match: cliutil.IsRefused},
	{Code: ExitNothingToDo, Meaning: "once: nothing to do, already on the newest release", Quiet: true,
		Match: func(err error) bool { return errors.Is(err, errNothingToDo) }},
}

const rootLong = `pullship-agent pulls signed releases from git, verifies them against a pinned
trust root, loads the image into the local Docker engine, applies each node's
config, keeps its network address attached, checks health (rolling back on
failure) and reports what it sees as signed status commits.`

// commands lists pullship-agent's commands, in the order help shows them.
func commands(a *app) []*command {
	return []*command{
		newInitCmd(a),
		newRunCmd(a),
		newOnceCmd(a),
		newPlanCmd(a),
		newStatusCmd(a),
	}
}

func rootHelp(cmds []*command) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nUsage:\n  pullship-agent COMMAND [flags]\n\nCommands:\n", rootLong)
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.short)
	}
	fmt.Fprintf(&b, "  %-8s %s\n", "help", "Help about a command")
	b.WriteString("\nRun 'pullship-agent COMMAND --help' for a command's flags and examples.\n\n")
	b.WriteString(exitCodes.Help())
	return b.String()
}

// Main runs pullship-agent with args and returns the process exit code.
func Main(env Env, args []string) int {
	return exitCodes.Exit(env, "pullship-agent", (&app{env: env, engine: dockerEngine}).main(context.Background(), args))
}

func (a *app) main(ctx context.Context, args []string) error {
	cmds := commands(a)
	if len(args) == 0 {
		fmt.Fprint(a.env.Stdout, rootHelp(cmds))
		return nil
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "--help", "help":
		if name == "help" && len(rest) > 0 {
			for _, c := range cmds {
				if c.name == rest[0] {
					fmt.Fprint(a.env.Stdout, c.help())
					return nil
				}
			}
			return cliutil.Usage(fmt.Errorf("help: unknown command %q", rest[0]))
		}
		fmt.Fprint(a.env.Stdout, rootHelp(cmds))
		return nil
	}
	for _, c := range cmds {
		if c.name != name {
			continue
		}
		args, err := c.parse(rest)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(a.env.Stdout, c.help())
			return nil
		}
		if err != nil {
			return err
		}
		if len(args) > 0 {
			return cliutil.Usage(fmt.Errorf("%s: unexpected argument %q", c.name, args[0]))
		}
		return c.run(ctx, args)
	}
	return cliutil.Usage(fmt.Errorf("unknown command %q (see pullship-agent --help)", name))
}

// HelpPage is one command's help as pullship-agent prints it.
type HelpPage struct {
	Name  string // "pullship-agent" or "pullship-agent once"
	Short string
	Text  string
}

// HelpPages is the help of pullship-agent and of each command, for the
// command reference in docs/cli.
func HelpPages() []HelpPage {
	cmds := commands(&app{env: DefaultEnv(), engine: dockerEngine})
	pages := []HelpPage{{Name: "pullship-agent", Short: "Make this host converge on the newest signed pullship release", Text: rootHelp(cmds)}}
	for _, c := range cmds {
		pages = append(pages, HelpPage{Name: "pullship-agent " + c.name, Short: c.short, Text: c.help()})
	}
	return pages
}

// passError marks what a pass's outcome says beyond its error.
func passError(out agent.Outcome, err error) error {
	if err == nil && out == agent.Nothing {
		return errNothingToDo
	}
	return err
}
