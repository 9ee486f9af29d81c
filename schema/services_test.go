package schema

import (
	"reflect"
	"strings"
	"testing"
)

const servicesNodeKey = `status_key = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAAIN0181wRLvGjNLsu8pp2tWKejAaG5k+VOkCFMhQL1o=
-----END PUBLIC KEY-----
"""`

// servicesFleet is a [[service]] fleet: services, then extra TOML, then
// two nodes (the second's own keys in node2).
func servicesFleet(services, extra, node2 string) []byte {
	return []byte(services + "\n" + extra + `
[attach]
driver = "none"

[[node]]
name = "a"
region = "r"
wave = 1
address = "10.0.0.1/24"
` + servicesNodeKey + `

[[node]]
name = "b"
region = "r"
wave = 1
address = "10.0.0.2/24"
` + servicesNodeKey + "\n" + node2 + "\n")
}

const twoServices = `
[[service]]
name = "broker"
image = "example/broker:1"
container = "broker-{{.Node}}"
depends_on = ["hook"]
reload = { action = "restart" }

[[service]]
name = "hook"
image = "example/hook:1"
container = "hook-{{.Node}}"
reload = { action = "restart" }
`

func TestParseFleetServices(t *testing.T) {
	f, err := ParseFleet("fleet.toml", servicesFleet(twoServices, "", `services = ["hook"]`))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Multi || len(f.Services) != 2 || f.Services[1].Restart != DefaultRestart {
		t.Fatalf("services: %+v", f.Services)
	}
	var order []string
	for _, s := range f.NodeServices(&f.Nodes[0]) {
		order = append(order, s.Name)
	}
	if strings.Join(order, ",") != "hook,broker" {
		t.Errorf("start order %v, want hook before broker", order)
	}
	b := f.NodeServices(&f.Nodes[1])
	if len(b) != 1 || b[0].Name != "hook" {
		t.Errorf("node b runs %v, want hook only", b)
	}
	// No attach = true anywhere: each node's first service in fleet order.
	if !f.Attached(&f.Nodes[0], &f.Services[0]) || f.Attached(&f.Nodes[0], &f.Services[1]) || !f.Attached(&f.Nodes[1], &f.Services[1]) {
		t.Errorf("attached services wrong")
	}
}

func TestParseFleetServicesRefused(t *testing.T) {
	hookTmpl := "[[template]]\nname = \"h\"\nsource = \"h.tmpl\"\ntarget = \"/etc/h\"\n"
	for _, tc := range []struct {
		name, services, extra, node2, want string
	}{
		{"cycle", strings.Replace(twoServices, `container = "hook-{{.Node}}"`, "container = \"hook-{{.Node}}\"\ndepends_on = [\"broker\"]", 1), "", "",
			`service "broker": depends_on cycle broker → hook → broker`},
		{"self", strings.Replace(twoServices, `depends_on = ["hook"]`, `depends_on = ["broker"]`, 1), "", "", `service "broker": depends_on: a service cannot depend on itself`},
		{"unknown dependency", strings.Replace(twoServices, `depends_on = ["hook"]`, `depends_on = ["redis"]`, 1), "", "", `service "broker": depends_on: no service "redis"`},
		{"duplicate name", strings.Replace(twoServices, `name = "hook"`, `name = "broker"`, 1), "", "", `service "broker": defined twice`},
		{"unknown key", strings.Replace(twoServices, `name = "hook"`, "name = \"hook\"\nbuild = \".\"", 1), "", "", `unknown key "service.build"`},
		{"template without service", twoServices, hookTmpl, "", `template "h": service: missing`},
		{"template of no service", twoServices, hookTmpl + "service = \"redis\"\n", "", `template "h": service: no service "redis"`},
		{"node missing a dependency", twoServices, "", `services = ["broker"]`, `node "b": services: "broker" depends on "hook", which the node does not run`},
		{"node unknown service", twoServices, "", `services = ["redis"]`, `node "b": services: no service "redis"`},
		{"node empty services", twoServices, "", `services = []`, `node "b": services: empty`},
		{"node container", twoServices, "", `container = "x"`, `node "b": container: a [[service]] fleet names containers per service`},
		{"same host port", strings.ReplaceAll(twoServices, `reload = { action = "restart" }`, "reload = { action = \"restart\" }\nports = [\"80:80\"]"), "", "",
			`service "hook": port "80:80": host port already used by service "broker"`},
		{"two clustered", strings.ReplaceAll(twoServices, `reload = { action = "restart" }`, "reload = { action = \"restart\" }\ncluster = { show = [\"s\"], format = \"vmq-json\", join = [\"j\", \"{{.Peer}}\"], peer = \"p\" }"), "", "",
			`service "hook": cluster: service "broker" is the clustered service already`},
		{"two attached", strings.ReplaceAll(twoServices, `reload = { action = "restart" }`, "reload = { action = \"restart\" }\nattach = true"), "", "",
			`node "a": services "hook" and "broker" both have attach = true`},
		{"same image name, other image", strings.Replace(twoServices, `image = "example/hook:1"`, "image = \"other/hook:1\"\nimage_name = \"broker-1\"", 1), "", "",
			`service "hook": image name "broker-1" already names image "example/broker:1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFleet("fleet.toml", servicesFleet(tc.services, tc.extra, tc.node2))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// The [service] form keeps its meaning: one unnamed service, and the keys
// that only make sense among several are refused in it.
func TestParseFleetOneServiceForm(t *testing.T) {
	one := "[service]\nimage = \"example/app:1\"\ncontainer = \"app\"\nreload = { action = \"restart\" }\n"
	f, err := ParseFleet("fleet.toml", servicesFleet(one, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	if f.Multi || len(f.All()) != 1 || f.All()[0].Name != "" || f.Service.Image != "example/app:1" || f.Service.Restart != DefaultRestart {
		t.Fatalf("one-service fleet read as %+v", f)
	}
	for key, want := range map[string]string{
		`name = "x"`:         "service: name: only [[service]] tables are named",
		`depends_on = ["x"]`: "service: depends_on: only [[service]] tables",
		`attach = true`:      "service: attach: only [[service]] tables",
		`services = ["x"]`:   `node "b": services: a [service] fleet has one service`,
	} {
		services, node2 := one+key+"\n", ""
		if strings.HasPrefix(key, "services") {
			services, node2 = one, key
		}
		if _, err := ParseFleet("fleet.toml", servicesFleet(services, "", node2)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", key, err, want)
		}
	}
}

// servicesRelease is testdata/release/vernemq.toml with node cn turned into
// a two-service node: its container becomes service "broker", after a
// "hook" service, and each file names one of them.
func servicesRelease(t *testing.T) *Release {
	t.Helper()
	r, err := ParseRelease("r", readFile(t, "testdata/release/vernemq.toml"))
	if err != nil {
		t.Fatal(err)
	}
	n := &r.Nodes[0]
	hook := Container{Name: "hook-cn", Restart: DefaultRestart, Reload: Reload{Action: ReloadRestart}}
	n.Services = []NodeService{
		{Name: "hook", Image: n.Image, Container: hook},
		{Name: "broker", Image: n.Image, DependsOn: []string{"hook"}, Attach: true, Container: *n.Container},
	}
	n.Image, n.Container = "", nil
	for i := range n.Files {
		n.Files[i].Service = "broker"
	}
	return r
}

func TestReleaseServicesRoundTrip(t *testing.T) {
	r := servicesRelease(t)
	for i := range r.Nodes[0].Services {
		r.Nodes[0].Services[i].Container.Network = "stack-cn"
	}
	enc, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(enc), "[node.container]\nname = \"\"") {
		t.Errorf("an empty [node.container] is written for a node of services:\n%s", enc)
	}
	r2, err := ParseRelease("r", enc)
	if err != nil {
		t.Fatalf("%v\n%s", err, enc)
	}
	if !reflect.DeepEqual(r, r2) {
		t.Errorf("round trip changed the release")
	}
	u := r2.Nodes[0].Units()
	if len(u) != 2 || u[0].Name != "hook" || !u[1].Attach {
		t.Errorf("units %+v", u)
	}
	if !strings.Contains(string(enc), "network = \"stack-cn\"") {
		t.Errorf("no network in the services' containers:\n%s", enc)
	}
	if c, ok := r2.Nodes[0].Clustered(); !ok || c.Name != "broker" {
		t.Errorf("clustered service %+v", c)
	}
	if one := r2.Nodes[1].Units(); len(one) != 1 || one[0].Name != "" || !one[0].Attach || one[0].Container.Name != r2.Nodes[1].Container.Name {
		t.Errorf("one-service node units %+v", one)
	}
}

func TestReleaseServicesRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(n *ReleaseNode)
		want string
	}{
		{"both forms", func(n *ReleaseNode) { n.Image = n.Services[0].Image }, "image and container are set besides [[node.service]]"},
		{"file without service", func(n *ReleaseNode) { n.Files[0].Service = "" }, `service "" is not a service of the node`},
		{"file of another service", func(n *ReleaseNode) { n.Files[0].Service = "redis" }, `service "redis" is not a service of the node`},
		{"dependency listed later", func(n *ReleaseNode) { n.Services[0].DependsOn = []string{"broker"} }, `service "hook": depends_on "broker": not a service listed before it`},
		{"same container", func(n *ReleaseNode) { n.Services[0].Container.Name = n.Services[1].Container.Name }, `already used by service "hook"`},
		{"unknown image", func(n *ReleaseNode) { n.Services[0].Image = "nope" }, `service "hook": image "nope" is not in [[image]]`},
		{"nothing attached", func(n *ReleaseNode) { n.Services[1].Attach = false }, "no service is attached"},
		{"two attached", func(n *ReleaseNode) { n.Services[0].Attach = true }, "network: 2 services attached"},
		{"two clustered", func(n *ReleaseNode) { n.Services[0].Container.Cluster = n.Services[1].Container.Cluster },
			`service "broker": container: cluster: service "hook" is the clustered service already`},
		{"duplicate name", func(n *ReleaseNode) { n.Services[1].Name = "hook"; n.Services[1].DependsOn = nil }, `service "hook": listed twice`},
		{"engine network mode", func(n *ReleaseNode) { n.Services[0].Container.Network = "host" }, `network "host": an engine network mode`},
		{"bad network name", func(n *ReleaseNode) { n.Services[0].Container.Network = "Stack CN" }, `container: network: name "Stack CN"`},
		{"overlay network", func(n *ReleaseNode) {
			n.Network.Driver, n.Network.Network = DriverDocker, "vmq"
			n.Services[0].Container.Network = "vmq"
		}, `container hook-cn: network "vmq" is the node's overlay network`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := servicesRelease(t)
			tc.edit(&r.Nodes[0])
			if _, err := r.Encode(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	// A one-service node naming a service in a file.
	r, err := ParseRelease("r", readFile(t, "testdata/release/vernemq.toml"))
	if err != nil {
		t.Fatal(err)
	}
	r.Nodes[1].Files[0].Service = "broker"
	if _, err := r.Encode(); err == nil || !strings.Contains(err.Error(), "the node has one unnamed service") {
		t.Fatalf("got %v", err)
	}
}
