package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pullship/pullship/bundler/shared/cliutil"

	"github.com/pullship/pullship/bundler/render"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pullship/pullship/bundler"
)

func newSecretCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage node secrets (age-encrypted values templates read with {{secret \"KEY\"}})",
		Long: `secret manages the secrets of fleet nodes. Each value is kept next to fleet.toml
in secrets/<node>.toml, encrypted with age to the node's age_recipient and to
the fleet's [secrets] recipients (the operators and CI that cut releases). A
config template reads one with {{secret "KEY"}}; release decrypts it with
--secrets-identity and encrypts the rendered file to the node, so neither the
fleet repository nor the release repository ever holds a plaintext value.
See docs/secrets.md.`,
	}
	cmd.AddCommand(newSecretSetCmd(env), newSecretListCmd(env), newSecretRmCmd(env))
	return cmd
}

func newSecretSetCmd(env Env) *cobra.Command {
	var fleet string
	var raw bool
	cmd := &cobra.Command{
		Use:   "set --fleet fleet.toml NODE KEY",
		Short: "Set a node secret, reading its value from standard input",
		Long: `set reads the value of secret KEY of node NODE from standard input (a prompt
that does not echo when it is a terminal; never from the command line, where
other users and shell history would see it), encrypts it to the node and to
fleet.toml [secrets] recipients, and replaces secrets/NODE.toml atomically.
One trailing newline is dropped unless --raw is given.`,
		Example: `  pullship secret set --fleet fleet.toml cn redis_password
  printf %s "$REDIS_PASSWORD" | pullship secret set --fleet fleet.toml cn redis_password`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return runSecretSet(env, fleet, args[0], args[1], raw) },
	}
	cmd.Flags().StringVar(&fleet, "fleet", "", "fleet.toml (secrets/ is next to it)")
	cmd.Flags().BoolVar(&raw, "raw", false, "keep the value's bytes exactly, trailing newline included")
	return cmd
}

func runSecretSet(env Env, fleet, node, key string, raw bool) error {
	if fleet == "" {
		return cliutil.Usage(errors.New("secret set: --fleet fleet.toml is required"))
	}
	if err := bundler.CheckSecretKey(key); err != nil {
		return cliutil.Usage(fmt.Errorf("secret set: %w", err))
	}
	value, err := readSecretValue(env, node, key, raw)
	if err != nil {
		return fmt.Errorf("secret set %s %s: %w", node, key, err)
	}
	if err := bundler.SetSecret(fleet, node, key, value); err != nil {
		return fmt.Errorf("secret set: %w", err)
	}
	fmt.Fprintf(env.Stdout, "secret %s of node %s set in %s\n", key, node, bundler.SecretsPath(fleet, node))
	return nil
}

// readSecretValue reads the value from a no-echo terminal prompt or from
// all of stdin (bounded).
func readSecretValue(env Env, node, key string, raw bool) ([]byte, error) {
	var value []byte
	if f, ok := env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(env.Stderr, "Value of secret %s for node %s: ", key, node)
		v, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(env.Stderr)
		if err != nil {
			return nil, fmt.Errorf("read value: %w", err)
		}
		value = v
	} else {
		v, err := io.ReadAll(io.LimitReader(env.Stdin, bundler.MaxSecretLength+2))
		if err != nil {
			return nil, fmt.Errorf("read value from stdin: %w", err)
		}
		value = v
	}
	if !raw {
		value = bytes.TrimSuffix(value, []byte("\n"))
		value = bytes.TrimSuffix(value, []byte("\r"))
	}
	if len(value) == 0 {
		return nil, errors.New("empty value on standard input (remove a secret with pullship secret rm)")
	}
	if len(value) > bundler.MaxSecretLength {
		return nil, fmt.Errorf("value larger than %d bytes", bundler.MaxSecretLength)
	}
	return value, nil
}

func newSecretListCmd(env Env) *cobra.Command {
	var fleet string
	cmd := &cobra.Command{
		Use:   "list --fleet fleet.toml [NODE]",
		Short: "List the names of node secrets (never their values)",
		Args: func(cmd *cobra.Command, args []string) error {
			return cliutil.Usage(cobra.MaximumNArgs(1)(cmd, args))
		},
		RunE: func(cmd *cobra.Command, args []string) error { return runSecretList(env, fleet, args) },
	}
	cmd.Flags().StringVar(&fleet, "fleet", "", "fleet.toml (secrets/ is next to it)")
	return cmd
}

// runSecretList lists the secrets of nodes (every node of the fleet when
// none is named).
func runSecretList(env Env, fleet string, nodes []string) error {
	if fleet == "" {
		return cliutil.Usage(errors.New("secret list: --fleet fleet.toml is required"))
	}
	if len(nodes) == 0 {
		data, err := os.ReadFile(fleet)
		if err != nil {
			return fmt.Errorf("secret list: %w", err)
		}
		f, err := render.ParseFleet(fleet, data)
		if err != nil {
			return fmt.Errorf("secret list: %w", err)
		}
		for _, n := range f.Nodes {
			nodes = append(nodes, n.Name)
		}
	}
	for _, n := range nodes {
		keys, err := bundler.ListSecrets(fleet, n)
		if err != nil {
			return fmt.Errorf("secret list: %w", err)
		}
		for _, k := range keys {
			fmt.Fprintf(env.Stdout, "%s\t%s\n", n, k)
		}
	}
	return nil
}

func newSecretRmCmd(env Env) *cobra.Command {
	var fleet string
	cmd := &cobra.Command{
		Use:   "rm --fleet fleet.toml NODE KEY",
		Short: "Remove a node secret",
		Args:  exactArgs(2),
		RunE:  func(cmd *cobra.Command, args []string) error { return runSecretRm(env, fleet, args[0], args[1]) },
	}
	cmd.Flags().StringVar(&fleet, "fleet", "", "fleet.toml (secrets/ is next to it)")
	return cmd
}

func runSecretRm(env Env, fleet, node, key string) error {
	if fleet == "" {
		return cliutil.Usage(errors.New("secret rm: --fleet fleet.toml is required"))
	}
	if err := bundler.RemoveSecret(fleet, node, key); err != nil {
		return fmt.Errorf("secret rm: %w", err)
	}
	fmt.Fprintf(env.Stdout, "secret %s of node %s removed\n", key, node)
	return nil
}
