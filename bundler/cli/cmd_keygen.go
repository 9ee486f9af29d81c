package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pullship/pullship/bundler/shared/cliutil"

	"github.com/pullship/pullship/schema"
	"github.com/spf13/cobra"
)

func newKeygenCmd(env Env) *cobra.Command {
	var o keygenOptions
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
		RunE: func(cmd *cobra.Command, _ []string) error { return runKeygen(env, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.out, "out", "", "write PREFIX.key and PREFIX.pub")
	f.StringVar(&o.alg, "algorithm", schema.DefaultAlgorithm, "key algorithm: "+strings.Join(schema.Algorithms(), " or "))
	f.BoolVar(&o.noPassword, "no-password", false, "write the private key unencrypted (test keys only)")
	f.StringVar(&o.passwordFile, "password-file", "", "read the password from the first line of this file")
	return cmd
}

type keygenOptions struct {
	out, alg, passwordFile string
	noPassword             bool
}

func runKeygen(env Env, o keygenOptions) error {
	if o.out == "" {
		return cliutil.Usage(errors.New("keygen: --out PREFIX is required"))
	}
	if !schema.KnownAlgorithm(o.alg) {
		return cliutil.Usage(fmt.Errorf("keygen: unknown --algorithm %q (want %s)", o.alg, strings.Join(schema.Algorithms(), " or ")))
	}
	if o.noPassword && o.passwordFile != "" {
		return cliutil.Usage(errors.New("keygen: --no-password and --password-file exclude each other"))
	}
	// Check both names before asking for a password or writing
	// anything, so a clash never leaves half a key pair behind.
	for _, p := range []string{o.out + ".key", o.out + ".pub"} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("keygen: %s already exists; remove it or choose another --out", p)
		}
	}
	var pw []byte
	if !o.noPassword {
		var err error
		if pw, err = (passwords{env: env, file: o.passwordFile}).get(o.out+".key", true); err != nil {
			return fmt.Errorf("keygen: %w", err)
		}
	}
	kp, err := schema.GenerateKey(o.alg, pw)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeNew(o.out+".key", kp.PrivatePEM, 0o600); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := writeNew(o.out+".pub", kp.PublicPEM, 0o644); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if o.noPassword {
		fmt.Fprintf(env.Stderr, "pullship: warning: %s.key is not encrypted; anyone who can read it can sign releases\n", o.out)
	}
	fmt.Fprintf(env.Stderr, "pullship: wrote %s.key and %s.pub (%s)\n", o.out, o.out, o.alg)
	fmt.Fprintln(env.Stdout, kp.KeyID)
	return nil
}
