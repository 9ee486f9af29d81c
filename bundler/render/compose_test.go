package render

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeCompose(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Every compose key pullship does not support is an error naming the key
// and the service, never dropped.
func TestComposeRefusesUnsupportedKeys(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"build", "services:\n  web:\n    image: a:1\n    build: .\n", `service "web": key "build" is not supported by pullship`},
		{"deploy", "services:\n  web:\n    image: a:1\n    deploy: {replicas: 2}\n", `service "web": key "deploy" is not supported by pullship`},
		{"env_file", "services:\n  web:\n    image: a:1\n    env_file: x.env\n", `service "web": key "env_file" is not supported`},
		{"extends", "services:\n  web:\n    image: a:1\n    extends: {service: other}\n", `service "web": key "extends" is not supported`},
		{"other network", "services:\n  web:\n    image: a:1\n    networks: [backend]\n", `service "web": networks: "backend": pullship attaches only its overlay network ("pullship")`},
		{"network options", "services:\n  web:\n    image: a:1\n    networks:\n      pullship: {ipv4_address: 10.0.0.9}\n", `service "web": key "networks.pullship.ipv4_address" is not supported`},
		{"top-level network", "services:\n  web:\n    image: a:1\nnetworks:\n  backend: {}\n", `networks: "backend": pullship attaches only its overlay network`},
		{"top-level volumes", "services:\n  web:\n    image: a:1\nvolumes:\n  data: {}\n", `key "volumes" is not supported by pullship`},
		{"include", "include: [other.yaml]\nservices:\n  web:\n    image: a:1\n", `key "include" is not supported by pullship`},
		{"start_period", "services:\n  web:\n    image: a:1\n    healthcheck: {test: [CMD, ping], start_period: 5s}\n", `service "web": key "healthcheck.start_period" is not supported`},
		{"port mode", "services:\n  web:\n    image: a:1\n    ports: [{target: 80, published: \"80\", mode: host}]\n", `service "web": key "ports.mode" is not supported`},
		{"volume bind options", "services:\n  web:\n    image: a:1\n    volumes: [{type: bind, source: /a, target: /b, bind: {propagation: shared}}]\n", `service "web": key "volumes.bind" is not supported`},
		{"tmpfs volume", "services:\n  web:\n    image: a:1\n    volumes: [{type: tmpfs, target: /b}]\n", `service "web": volumes: type "tmpfs" is not supported by pullship`},
		{"no image", "services:\n  web:\n    container_name: xy\n", `service "web": image: missing`},
		{"environment from the release machine", "services:\n  web:\n    image: a:1\n    environment: [HOME]\n", `service "web": environment: HOME: no value`},
		{"completed condition", "services:\n  web:\n    image: a:1\n    depends_on: {db: {condition: service_completed_successfully}}\n  db:\n    image: b:1\n",
			`service "web": depends_on: db: condition "service_completed_successfully" is not supported`},
		{"unknown extension key", "services:\n  web:\n    image: a:1\n    x-pullship: {reload: {action: restart}, bogus: 1}\n", `service "web": x-pullship: json: unknown field "bogus"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCompose(writeCompose(t, tc.body), "compose.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestComposeServices(t *testing.T) {
	dir := writeCompose(t, `services:
  web:
    image: example/web:1
    depends_on:
      db: {condition: service_healthy}
    networks: [pullship]
    ports: ["8080:80", "127.0.0.1:53:53/udp"]
    volumes: ["/srv/{{.Node}}/web:/data:ro", "cache:/cache"]
    environment: {MODE: prod}
    command: serve --port 80
    restart: always
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- localhost/health"]
      interval: 2s
      timeout: 3s
      retries: 4
  db:
    image: example/db:1
`)
	svcs, err := LoadCompose(dir, "compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 2 || svcs[0].Name != "web" || svcs[1].Name != "db" {
		t.Fatalf("services %+v: want the file's order", svcs)
	}
	w := svcs[0]
	if w.Container != "{{.Service}}-{{.Node}}" || strings.Join(w.Ports, ",") != "8080:80,127.0.0.1:53:53/udp" ||
		strings.Join(w.Binds, ",") != "/srv/{{.Node}}/web:/data:ro,cache:/cache" || w.Env["MODE"] != "prod" ||
		strings.Join(w.Command, " ") != "serve --port 80" || w.Restart != "always" || w.Attach == nil || !*w.Attach ||
		strings.Join(w.DependsOn, ",") != "db" || w.Reload.Action != "restart" {
		t.Fatalf("web: %+v", w)
	}
	if h := w.Health; strings.Join(h.Command, " ") != "/bin/sh -c wget -q -O- localhost/health" || h.Interval.D().String() != "2s" || h.Timeout.D().String() != "3s" || h.Retries != 4 {
		t.Fatalf("web health: %+v", h)
	}
	if svcs[1].Attach != nil {
		t.Fatalf("db attached: %+v", svcs[1])
	}
}

// A fleet naming a compose file takes its services from it, and may not
// list services itself.
func TestParseFleetCompose(t *testing.T) {
	dir := writeCompose(t, "services:\n  web:\n    image: example/web:1\n")
	fleet := "compose = \"compose.yaml\"\n[attach]\ndriver = \"none\"\n[[node]]\nname = \"n\"\nregion = \"r\"\nwave = 1\naddress = \"10.0.0.1/24\"\nstatus_key = \"n.pub\"\n"
	f, err := ParseFleet(filepath.Join(dir, "fleet.toml"), []byte(fleet))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Multi || len(f.Services) != 1 || f.Services[0].Name != "web" || f.Services[0].Restart != "unless-stopped" {
		t.Fatalf("fleet services %+v", f.Services)
	}
	for _, extra := range []string{"[service]\nimage = \"a:1\"\ncontainer = \"a\"\nreload = { action = \"restart\" }\n", "[[service]]\nname = \"a\"\nimage = \"a:1\"\ncontainer = \"a\"\nreload = { action = \"restart\" }\n"} {
		if _, err := ParseFleet(filepath.Join(dir, "fleet.toml"), []byte(fleet+extra)); err == nil || !strings.Contains(err.Error(), "the services come from compose.yaml") {
			t.Errorf("compose and services: got %v", err)
		}
	}
	if _, err := ParseFleet(filepath.Join(dir, "fleet.toml"), []byte(strings.Replace(fleet, "compose.yaml", "../compose.yaml", 1))); err == nil {
		t.Error("a compose file outside the fleet directory was read")
	}
}

// A service's network is a template rendered per node, from [[service]]
// tables and from compose's x-pullship alike; a name the engine keeps for
// its own modes, or a bad template, is refused naming the service.
func TestRenderServiceNetwork(t *testing.T) {
	dir := writeCompose(t, "services:\n  web:\n    image: example/web:1\n    x-pullship: {network: \"stack-{{.Node}}\"}\n  db:\n    image: example/db:1\n")
	nodes := "[attach]\ndriver = \"none\"\n[[node]]\nname = \"n1\"\nregion = \"r\"\nwave = 1\naddress = \"10.0.0.1/24\"\nstatus_key = \"n.pub\"\n" +
		"[[node]]\nname = \"n2\"\nregion = \"r\"\nwave = 1\naddress = \"10.0.0.2/24\"\nstatus_key = \"n.pub\"\n"
	tables := "[[service]]\nname = \"web\"\nimage = \"example/web:1\"\ncontainer = \"web-{{.Node}}\"\nnetwork = \"stack-{{.Node}}\"\nreload = { action = \"restart\" }\n" +
		"[[service]]\nname = \"db\"\nimage = \"example/db:1\"\ncontainer = \"db-{{.Node}}\"\nreload = { action = \"restart\" }\n"
	copyFile(t, filepath.Join(fleetDir, "keys", "cn.pub"), filepath.Join(dir, "n.pub"))
	for what, fleet := range map[string]string{"compose": "compose = \"compose.yaml\"\n" + nodes, "tables": tables + nodes} {
		f, err := ParseFleet(filepath.Join(dir, "fleet.toml"), []byte(fleet))
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		r, err := Render(f, dir)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, n := range r.Nodes {
			u := n.Release.Units()
			if len(u) != 2 || u[0].Container.Network != "stack-"+n.Release.Name || u[1].Container.Network != "" {
				t.Errorf("%s: node %s: services %+v", what, n.Release.Name, u)
			}
		}
	}
	for bad, want := range map[string]string{
		`"host"`:            `network "host": an engine network mode`,
		`"stack-{{.Node"`:   `service "web": network`,
		`"Stack {{.Node}}"`: `network: name "Stack n1"`,
	} {
		fleet := strings.Replace(tables, `"stack-{{.Node}}"`, bad, 1) + nodes
		f, err := ParseFleet(filepath.Join(dir, "fleet.toml"), []byte(fleet))
		if err == nil {
			_, err = Render(f, dir)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("network %s: got %v, want %q", bad, err, want)
		}
	}
}

// ${VAR} and $VAR are refused, naming the line, the service, the key and
// the variable, wherever they are written (a fragment merged into a
// service included); $$ is a literal $, as compose has it.
func TestComposeInterpolation(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"braced", "services:\n  web:\n    image: example/web:${TAG}\n",
			`compose.yaml:3: service "web": image: "example/web:${TAG}": variable TAG: interpolation is not supported by pullship`},
		{"named", "services:\n  web:\n    image: a:1\n    environment:\n      MODE: $MODE\n",
			`compose.yaml:5: service "web": environment.MODE: "$MODE": variable MODE: interpolation is not supported`},
		{"default", "services:\n  web:\n    image: a:1\n    command: [\"serve\", \"--port=${PORT:-80}\"]\n",
			`compose.yaml:4: service "web": command: "--port=${PORT:-80}": variable PORT`},
		{"required", "services:\n  web:\n    image: a:1\n    container_name: \"${NAME:?set NAME}\"\n",
			`service "web": container_name: "${NAME:?set NAME}": variable NAME`},
		{"in a key", "services:\n  web:\n    image: a:1\n    environment:\n      ${KEY}: x\n", `compose.yaml:5: service "web": environment: "${KEY}": variable KEY`},
		{"in a fragment", "x-base: &base\n  restart: ${POLICY}\nservices:\n  web:\n    <<: *base\n    image: a:1\n",
			`compose.yaml:2: key "x-base": restart: "${POLICY}": variable POLICY`},
		{"invalid", "services:\n  web:\n    image: a:1\n    command: [\"echo\", \"${}\"]\n", `compose.yaml:4: service "web": command: "${}": Invalid template`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCompose(writeCompose(t, tc.body), "compose.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	svcs, err := LoadCompose(writeCompose(t, "services:\n  web:\n    image: a:1\n    environment: {PRICE: \"$$5\"}\n    healthcheck:\n      test: [\"CMD-SHELL\", \"test -n \\\"$$HOME\\\"\"]\n"), "compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if w := svcs[0]; w.Env["PRICE"] != "$5" || strings.Join(w.Health.Command, " ") != `/bin/sh -c test -n "$HOME"` {
		t.Fatalf("$$ not read as $: env %v health %q", w.Env, w.Health.Command)
	}
}

// YAML merge keys and aliases are read as compose reads them: what a
// fragment brings into a service is the service's, checked like the rest.
func TestComposeMergeKeys(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"refused key in a fragment", "x-base: &base\n  restart: always\n  build: .\nservices:\n  web:\n    <<: *base\n    image: a:1\n",
			`compose.yaml:3: service "web": key "build" is not supported by pullship`},
		{"refused nested key in a fragment", "x-hc: &hc\n  test: [CMD, ping]\n  start_period: 5s\nservices:\n  web:\n    image: a:1\n    healthcheck:\n      <<: *hc\n",
			`compose.yaml:3: service "web": key "healthcheck.start_period" is not supported`},
		{"refused key in a list of fragments", "x-a: &a {restart: always}\nx-b: &b {deploy: {replicas: 2}}\nservices:\n  web:\n    <<: [*a, *b]\n    image: a:1\n",
			`compose.yaml:2: service "web": key "deploy" is not supported`},
		{"aliased service", "x-web: &web {image: a:1, build: .}\nservices:\n  web: *web\n", `service "web": key "build" is not supported`},
		{"merge of a scalar", "x-a: &a hello\nservices:\n  web:\n    <<: *a\n    image: a:1\n", `merge key: want a mapping or a list of mappings`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCompose(writeCompose(t, tc.body), "compose.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	svcs, err := LoadCompose(writeCompose(t, `x-common: &common
  restart: always
  environment: {MODE: prod}
  healthcheck: &hc
    test: [CMD, ping]
    retries: 3
services:
  web:
    <<: *common
    image: example/web:1
    environment: {MODE: dev}
  db:
    <<: *common
    image: example/db:1
    healthcheck:
      <<: *hc
      retries: 5
`), "compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	web, db := svcs[0], svcs[1]
	if web.Restart != "always" || web.Env["MODE"] != "dev" || strings.Join(web.Health.Command, " ") != "ping" || web.Health.Retries != 3 {
		t.Errorf("web with the fragment merged: %+v", web)
	}
	if db.Restart != "always" || db.Env["MODE"] != "prod" || db.Health.Retries != 5 {
		t.Errorf("db with the fragment merged: %+v", db)
	}
}
