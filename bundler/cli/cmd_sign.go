package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/pullship/pullship/bundler/shared/cliutil"

	"github.com/pullship/pullship/schema"
	"github.com/spf13/cobra"
)

func newSignCmd(env Env) *cobra.Command {
	var o signOptions
	cmd := &cobra.Command{
		Use:   "sign --key KEY FILE",
		Short: "Sign a file, adding the signature to FILE.sig",
		Long: `sign signs the exact bytes of FILE with the private key KEY and adds the
signature to the detached signature file FILE.sig, creating it if needed. A key
that already signed FILE has its entry replaced, never duplicated, so several
people can each run sign on the same file to reach a threshold.

ECDSA signatures are ASN.1 DER over sha256(FILE); base64-decode the value in
FILE.sig and "openssl dgst -sha256 -verify KEY.pub -signature SIG.der FILE"
verifies it.`,
		Example: `  pullship sign --key alice.key release.toml
  PULLSHIP_PASSWORD=... pullship sign --key bob.key root/root-2.toml`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { o.file = args[0]; return runSign(env, o) },
	}
	cmd.Flags().StringVar(&o.keyPath, "key", "", "private key file")
	cmd.Flags().StringVar(&o.passwordFile, "password-file", "", "read the key password from the first line of this file")
	return cmd
}

type signOptions struct {
	file, keyPath, passwordFile string
}

func runSign(env Env, o signOptions) error {
	file := o.file
	if o.keyPath == "" {
		return cliutil.Usage(errors.New("sign: --key KEY is required"))
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	sigPath := schema.SigFileName(file)
	var sigs schema.SignatureFile
	old, err := os.ReadFile(sigPath)
	switch {
	case err == nil:
		parsed, err := schema.ParseSignatures(sigPath, old)
		if err != nil {
			return fmt.Errorf("sign %s: existing signatures: %w (fix or remove it)", file, err)
		}
		sigs = *parsed
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("sign: %w", err)
	}
	k, err := loadSigningKey(o.keyPath, passwords{env: env, file: o.passwordFile})
	if err != nil {
		return fmt.Errorf("sign %s: %w", file, err)
	}
	s, err := schema.Sign(k.sv, k.id, k.alg, data)
	if err != nil {
		return fmt.Errorf("sign %s: %w", file, err)
	}
	sigs.Add(s)
	if len(sigs.Signatures) > schema.MaxSignatures {
		return fmt.Errorf("sign %s: %s would hold more than %d signatures", file, sigPath, schema.MaxSignatures)
	}
	if err := writeAtomic(sigPath, sigs.Encode(), 0o644); err != nil {
		return fmt.Errorf("sign %s: %w", file, err)
	}
	n := len(sigs.Signatures)
	plural := "s"
	if n == 1 {
		plural = ""
	}
	fmt.Fprintf(env.Stdout, "signed %s with key %s (%s now holds %d signature%s)\n", file, k.id, sigPath, n, plural)
	return nil
}
