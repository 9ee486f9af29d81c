package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pullship/pullship/schema"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newKeygenCmd) }

func newKeygenCmd(env Env) *cobra.Command {
	var out, alg, passwordFile string
	var noPassword bool
	cmd := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "Generate a signing key pair (PREFIX.key, PREFIX.pub)",
		Long: `keygen generates a key pair for signing releases and trust roots. It writes
PREFIX.key (the private key, mode 0600, encrypted with a password in sigstore's
"ENCRYPTED SIGSTORE PRIVATE KEY" PEM format, which cosign also reads) and
PREFIX.pub (the PKIX public key PEM), and prints the key id: the hex sha256 of
the public key's DER SubjectPublicKeyInfo. Existing files are never replaced.

The password comes from --password-file (first line), else $PULLSHIP_PASSWORD,
else a prompt on the terminal. --no-password writes the private key
unencrypted (PKCS#8 PEM); only do that for test keys.`,
		Example: `  pullship keygen --out alice
  pullship keygen --out ci-signer --algorithm ed25519 --password-file /run/secrets/pw
  PULLSHIP_PASSWORD=... pullship keygen --out bob`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return withCode(ExitUsage, errors.New("keygen: --out PREFIX is required"))
			}
			if !schema.KnownAlgorithm(alg) {
				return withCode(ExitUsage, fmt.Errorf("keygen: unknown --algorithm %q (want %s)", alg, strings.Join(schema.Algorithms(), " or ")))
			}
			if noPassword && passwordFile != "" {
				return withCode(ExitUsage, errors.New("keygen: --no-password and --password-file exclude each other"))
			}
			// Check both names before asking for a password or writing
			// anything, so a clash never leaves half a key pair behind.
			for _, p := range []string{out + ".key", out + ".pub"} {
				if _, err := os.Lstat(p); err == nil {
					return fmt.Errorf("keygen: %s already exists; remove it or choose another --out", p)
				}
			}
			var pw []byte
			if !noPassword {
				var err error
				if pw, err = (passwords{env: env, file: passwordFile}).get(out+".key", true); err != nil {
					return fmt.Errorf("keygen: %w", err)
				}
			}
			kp, err := schema.GenerateKey(alg, pw)
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			if err := writeNew(out+".key", kp.PrivatePEM, 0o600); err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			if err := writeNew(out+".pub", kp.PublicPEM, 0o644); err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			if noPassword {
				fmt.Fprintf(env.Stderr, "pullship: warning: %s.key is not encrypted; anyone who can read it can sign releases\n", out)
			}
			fmt.Fprintf(env.Stderr, "pullship: wrote %s.key and %s.pub (%s)\n", out, out, alg)
			fmt.Fprintln(env.Stdout, kp.KeyID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "write PREFIX.key and PREFIX.pub")
	f.StringVar(&alg, "algorithm", schema.DefaultAlgorithm, "key algorithm: "+strings.Join(schema.Algorithms(), " or "))
	f.BoolVar(&noPassword, "no-password", false, "write the private key unencrypted (test keys only)")
	f.StringVar(&passwordFile, "password-file", "", "read the password from the first line of this file")
	return cmd
}
