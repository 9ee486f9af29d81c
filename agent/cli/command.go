package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pullship/pullship/bundler/shared/cliutil"
)

// command is one pullship-agent command: its help, its flags, and run,
// which gets the flags parsed into the options the command's constructor
// bound them to. The standard flag package parses them: the agent links no
// command-line framework (cobra would bring text/template).
type command struct {
	name    string
	short   string // one line, for the command list
	long    string
	example string
	flags   *flag.FlagSet
	alias   map[string]string // long flag name → its one-letter alias
	run     func(ctx context.Context, args []string) error
}

func newCommand(name, short, long, example string) *command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &command{name: name, short: short, long: long, example: example, flags: fs, alias: map[string]string{}}
}

// stringFlag registers --name and its alias -letter.
func (c *command) stringFlag(p *string, name, letter, def, usage string) {
	c.flags.StringVar(p, name, def, usage)
	if letter != "" {
		c.flags.StringVar(p, letter, def, usage)
		c.alias[name] = letter
	}
}

// help is the command's --help text.
func (c *command) help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nUsage:\n  pullship-agent %s [flags]\n", strings.TrimSpace(c.long), c.name)
	if c.example != "" {
		fmt.Fprintf(&b, "\nExamples:\n%s\n", c.example)
	}
	b.WriteString("\nFlags:\n")
	aliases := map[string]bool{}
	for _, l := range c.alias {
		aliases[l] = true
	}
	c.flags.VisitAll(func(f *flag.Flag) {
		if aliases[f.Name] {
			return
		}
		name := "    --" + f.Name
		if l, ok := c.alias[f.Name]; ok {
			name = "-" + l + ", --" + f.Name
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(&b, "  %-20s %s%s\n", name, f.Usage, def)
	})
	fmt.Fprintf(&b, "  %-20s %s\n", "-h, --help", "help for "+c.name)
	return b.String()
}

// parse reads args into the command's flags. Flags come before arguments,
// as the standard flag package reads them.
func (c *command) parse(args []string) ([]string, error) {
	if err := c.flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, cliutil.Usage(fmt.Errorf("%s: %w", c.name, err))
	}
	return c.flags.Args(), nil
}
