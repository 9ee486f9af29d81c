package cli

import (
	"fmt"
	"os"

	"github.com/pullship/pullship/schema"
	"github.com/sigstore/sigstore/pkg/signature"
)

// signingKey is a loaded private key and what identifies it.
type signingKey struct {
	path string
	sv   signature.SignerVerifier
	id   string
	alg  string
}

// loadSigningKey reads a private key file, asking for its password only
// when it is encrypted.
func loadSigningKey(path string, pw passwords) (*signingKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sv, alg, err := schema.LoadPrivateKey(path, data, func() ([]byte, error) { return pw.get(path, false) })
	if err != nil {
		return nil, err
	}
	pub, err := sv.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	id, err := schema.KeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("load key %s: %w", path, err)
	}
	return &signingKey{path: path, sv: sv, id: id, alg: alg}, nil
}

// sign signs data with every key, one signature per distinct key.
func signAll(keys []*signingKey, data []byte) (*schema.SignatureFile, error) {
	var f schema.SignatureFile
	for _, k := range keys {
		s, err := schema.Sign(k.sv, k.id, k.alg, data)
		if err != nil {
			return nil, err
		}
		f.Add(s)
	}
	return &f, nil
}
