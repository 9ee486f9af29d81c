package config

import "testing"

func TestAgeIdentityDefaultsNextToTheKey(t *testing.T) {
	const base = `
remotes = ["mirror"]
root = "root-1.toml"
state_dir = "/var/lib/pullship"
allowed_dirs = ["/etc/vernemq"]
`
	for _, tc := range []struct{ node, want string }{
		{"[[node]]\nname = \"cn\"\nkey = \"keys/cn.key\"\n", "/etc/pullship/keys/cn.age"},
		{"[[node]]\nname = \"cn\"\nkey = \"/k/cn.pem\"\n", "/k/cn.pem.age"},
		{"[[node]]\nname = \"cn\"\nkey = \"cn.key\"\nage_identity = \"id/cn.txt\"\n", "/etc/pullship/id/cn.txt"},
	} {
		c, err := Parse("/etc/pullship/agent.toml", []byte(base+tc.node))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Nodes[0].AgeIdentity; got != tc.want {
			t.Errorf("%q: age_identity %q, want %q", tc.node, got, tc.want)
		}
	}
}
