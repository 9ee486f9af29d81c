package cli

// KMS providers compiled into pullship (the release side only: the agent
// never imports KMS code). A --key of the form hashivault://KEYNAME signs
// with HashiCorp Vault's transit engine (VAULT_ADDR, VAULT_TOKEN).
import _ "github.com/sigstore/sigstore/pkg/signature/kms/hashivault"
