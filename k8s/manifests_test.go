package k8s

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/controlplane"
	"github.com/ccproxy/ccproxy/envoy"
	"github.com/ccproxy/ccproxy/internal/xdsvalidate"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	// Types named by "@type" in the bootstrap; protojson resolves them from
	// the global registry these imports fill.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// overlays are the kustomizations `kubectl apply -k` is pointed at, plus the
// production overlay with both optional components (see renderAll).
var overlays = []string{"overlays/dev", "overlays/production"}

// renderAll renders every overlay and the production overlay with the
// optional components, by name.
func renderAll(t *testing.T) map[string]*Manifests {
	t.Helper()
	out := map[string]*Manifests{}
	for _, dir := range overlays {
		m, err := Render(dir)
		if err != nil {
			t.Fatal(err)
		}
		out[dir] = m
	}
	tmp := t.TempDir()
	abs := relTo(t, tmp, ".")
	kust := fmt.Sprintf("resources:\n- %s/overlays/production\ncomponents:\n- %[1]s/components/monitoring\n- %[1]s/components/cert-manager\n", abs)
	if err := os.WriteFile(filepath.Join(tmp, "kustomization.yaml"), []byte(kust), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Render(tmp)
	if err != nil {
		t.Fatal(err)
	}
	out["overlays/production+components"] = m
	return out
}

// relTo returns the path of target (relative to this directory) from
// dir: kustomize refuses absolute paths of kustomizations.
func relTo(t *testing.T, dir, target string) string {
	t.Helper()
	abs, err := filepath.Abs(target)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, abs)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// TestRenderIsStrict shows that Render refuses what the API server would
// silently drop or reject: a misspelt field, a value of the wrong type, a
// kind it does not know.
func TestRenderIsStrict(t *testing.T) {
	for _, tc := range []struct{ name, patch, want string }{
		{"unknown field", `{"op":"add","path":"/spec/template/spec/containers/0/readinesProbe","value":{}}`, `json: unknown field "readinesProbe"`},
		{"wrong type", `{"op":"replace","path":"/spec/replicas","value":"two"}`, "cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"},
		{"bad quantity", `{"op":"replace","path":"/spec/template/spec/containers/0/resources/limits/memory","value":"lots"}`, "quantities must match the regular expression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			abs := relTo(t, dir, "base")
			kust := fmt.Sprintf("resources:\n- %s\npatches:\n- target: {kind: Deployment, name: ccproxy-admin}\n  patch: '[%s]'\n", abs, tc.patch)
			if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kust), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Render(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Render: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("unknown kind", func(t *testing.T) {
		dir := t.TempDir()
		obj := "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: x, image: x}]}\n"
		if err := os.WriteFile(filepath.Join(dir, "pod.yaml"), []byte(obj), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources: [pod.yaml]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Render(dir); err == nil || !strings.Contains(err.Error(), "unexpected kind v1/Pod") {
			t.Fatalf("Render: %v", err)
		}
	})
}

// TestBootstrapCopies: the base's Envoy files are envoy/bootstrap.yaml and
// envoy/sds/ byte for byte, so that envoy's tests of them cover what is
// deployed.
func TestBootstrapCopies(t *testing.T) {
	for copy, orig := range map[string]string{
		"base/envoy/bootstrap.yaml":                  "../envoy/bootstrap.yaml",
		"base/envoy/sds/xds-client-certificate.yaml": "../envoy/sds/xds-client-certificate.yaml",
		"base/envoy/sds/xds-trusted-ca.yaml":         "../envoy/sds/xds-trusted-ca.yaml",
	} {
		a, err := os.ReadFile(copy)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(orig)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("k8s/%s differs from %s: copy it (cp %s k8s/%s)", copy, strings.TrimPrefix(orig, "../"), strings.TrimPrefix(orig, "../"), copy)
		}
	}
}

// settings reads docs/configuration.md (generated from the commands'
// settings and kept current by cmd/ccproxy's TestConfigurationDocsUpToDate)
// into the environment variables each command accepts.
func settings(t *testing.T) map[string]map[string]bool {
	t.Helper()
	f, err := os.Open("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := regexp.MustCompile(`^### .*\((.*)\)$`)
	cmdRe := regexp.MustCompile("`ccproxy ([a-z -]+)`")
	row := regexp.MustCompile("^[|] `([A-Z0-9_]+)` [|]")
	out := map[string]map[string]bool{}
	var cmds []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if m := head.FindStringSubmatch(line); m != nil {
			cmds = nil
			for _, c := range cmdRe.FindAllStringSubmatch(m[1], -1) {
				cmds = append(cmds, c[1])
			}
			continue
		}
		if m := row.FindStringSubmatch(line); m != nil {
			for _, c := range cmds {
				if out[c] == nil {
					out[c] = map[string]bool{}
				}
				out[c][m[1]] = true
			}
		}
	}
	if len(out["extproc"]) < 10 || len(out["admin"]) < 10 || len(out["migrate up"]) == 0 {
		t.Fatalf("docs/configuration.md: found too few settings: %v", out)
	}
	return out
}

// ccproxyCommand is the ccproxy command a container runs ("extproc",
// "migrate up"), or "" for a container of another image.
func ccproxyCommand(c corev1.Container) string {
	if c.Image == "" || !strings.Contains(c.Image, "ccproxy") || len(c.Command) > 0 {
		return ""
	}
	if len(c.Args) >= 2 && c.Args[0] == "migrate" {
		return "migrate " + c.Args[1]
	}
	if len(c.Args) > 0 {
		return c.Args[0]
	}
	return ""
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func containerOf(t *testing.T, m *Manifests, deployment, container string) corev1.Container {
	t.Helper()
	o := m.Get("Deployment", deployment)
	if o == nil {
		t.Fatalf("no Deployment %s", deployment)
	}
	for _, c := range o.Value.(*appsv1.Deployment).Spec.Template.Spec.Containers {
		if c.Name == container {
			return c
		}
	}
	t.Fatalf("Deployment %s has no container %s", deployment, container)
	return corev1.Container{}
}

// TestCommands: each workload runs the ccproxy command its role needs, with
// settings that command knows; the migration runs `migrate up`.
func TestCommands(t *testing.T) {
	known := settings(t)
	want := map[string][]string{ // workload/container → args
		"ccproxy-migrate/migrate":           {"migrate", "up"},
		"ccproxy-controlplane/controlplane": {"controlplane"},
		"ccproxy-admin/admin":               {"admin"},
		"ccproxy-gateway/extproc":           {"extproc"},
	}
	for name, m := range renderAll(t) {
		t.Run(name, func(t *testing.T) {
			seen := map[string]bool{}
			for _, w := range m.Workloads() {
				for _, c := range w.Template.Spec.Containers {
					cmd := ccproxyCommand(c)
					if cmd == "" {
						continue
					}
					key := w.Name + "/" + c.Name
					seen[key] = true
					if !slices.Equal(c.Args, want[key]) {
						t.Errorf("%s runs ccproxy %q, want %q", key, c.Args, want[key])
					}
					if len(known[cmd]) == 0 {
						t.Errorf("%s: ccproxy %s has no settings in docs/configuration.md", key, cmd)
					}
					names := map[string]bool{}
					for _, e := range c.Env {
						if names[e.Name] {
							t.Errorf("%s sets %s twice", key, e.Name)
						}
						names[e.Name] = true
						if !known[cmd][e.Name] {
							t.Errorf("%s sets %s, which is not a setting of ccproxy %s", key, e.Name, cmd)
						}
					}
					if len(c.EnvFrom) > 0 {
						t.Errorf("%s uses envFrom: name each setting so that this test can check it", key)
					}
				}
			}
			for key := range want {
				if !seen[key] {
					t.Errorf("no container %s", key)
				}
			}
		})
	}
}

// unverifiedPins are the images whose digest could not be verified when
// the manifests were written, by reason. Every other image is pinned by
// digest.
var unverifiedPins = map[string]string{
	// The digest of each Envoy release is published with the image; none
	// was available for v1.40.0 to the machine this was written on.
	"envoyproxy/envoy:v1.40.0": "pin with: kustomize edit set image envoyproxy/envoy=envoyproxy/envoy:v1.40.0@sha256:<digest>",
	// The operator's own build (make image or the Dockerfile), pinned by
	// digest at deployment (docs/deploy-kubernetes.md).
	"registry.example.com/platform/ccproxy:v1.0.0": "your registry's digest of your build",
	// Built on the developer's machine and loaded into kind with
	// imagePullPolicy Never: there is no registry digest.
	"ccproxy:dev": "local image",
}

var digestRe = regexp.MustCompile(`^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)?@sha256:[0-9a-f]{64}$`)

// TestImagesPinned: every image is pinned by digest, except the listed ones.
func TestImagesPinned(t *testing.T) {
	for name, m := range renderAll(t) {
		t.Run(name, func(t *testing.T) {
			for _, w := range m.Workloads() {
				for _, c := range append(slices.Clone(w.Template.Spec.InitContainers), w.Template.Spec.Containers...) {
					if digestRe.MatchString(c.Image) {
						continue
					}
					if _, ok := unverifiedPins[c.Image]; !ok {
						t.Errorf("%s/%s: image %q is not pinned by digest", w.Name, c.Name, c.Image)
					}
					if c.Image == "ccproxy:dev" && c.ImagePullPolicy != corev1.PullNever {
						t.Errorf("%s/%s: the local image must never be pulled", w.Name, c.Name)
					}
				}
			}
			envoy := containerOf(t, m, "ccproxy-gateway", "envoy")
			if !strings.HasPrefix(envoy.Image, "envoyproxy/envoy:v1.40.") {
				t.Errorf("Envoy image %q, want envoyproxy/envoy:v1.40.x", envoy.Image)
			}
		})
	}
}

// TestSecurity: every pod runs as non-root with the runtime's seccomp
// profile, and every container without privilege escalation, with a
// read-only root filesystem, all capabilities dropped, requests and limits
// for CPU and memory, and (outside Jobs) readiness and liveness probes.
func TestSecurity(t *testing.T) {
	for name, m := range renderAll(t) {
		t.Run(name, func(t *testing.T) {
			for _, w := range m.Workloads() {
				ps := w.Template.Spec.SecurityContext
				if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
					t.Errorf("%s: pod without runAsNonRoot", w.Name)
				}
				if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("%s: pod without seccomp RuntimeDefault", w.Name)
				}
				if w.Template.Spec.AutomountServiceAccountToken != nil && *w.Template.Spec.AutomountServiceAccountToken {
					t.Errorf("%s mounts an API token", w.Name)
				}
				if sa := w.Template.Spec.ServiceAccountName; sa != "" {
					o := m.Get("ServiceAccount", sa)
					if o == nil {
						t.Errorf("%s: no ServiceAccount %s", w.Name, sa)
					} else if a := o.Value.(*corev1.ServiceAccount).AutomountServiceAccountToken; a == nil || *a {
						t.Errorf("ServiceAccount %s mounts its token", sa)
					}
				} else if a := w.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
					t.Errorf("%s: the default ServiceAccount's token is mounted", w.Name)
				}
				for _, c := range w.Template.Spec.Containers {
					where := w.Name + "/" + c.Name
					uid := ps.RunAsUser
					sc := c.SecurityContext
					if sc != nil && sc.RunAsUser != nil {
						uid = sc.RunAsUser
					}
					if uid == nil || *uid == 0 {
						t.Errorf("%s: no non-zero runAsUser (the image's user is not checked by the kubelet until it starts)", where)
					}
					if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
						t.Errorf("%s: privilege escalation not disabled", where)
					}
					if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
						t.Errorf("%s: root filesystem not read-only", where)
					}
					if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
						t.Errorf("%s: capabilities not exactly drop ALL", where)
					}
					if sc != nil && sc.Privileged != nil && *sc.Privileged {
						t.Errorf("%s is privileged", where)
					}
					for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
						req, okReq := c.Resources.Requests[r]
						lim, okLim := c.Resources.Limits[r]
						if !okReq || !okLim || req.IsZero() || req.Cmp(lim) > 0 {
							t.Errorf("%s: %s request %v / limit %v", where, r, c.Resources.Requests[r], c.Resources.Limits[r])
						}
					}
					if w.Kind != "Job" && (c.ReadinessProbe == nil || c.LivenessProbe == nil) {
						t.Errorf("%s: no readiness or liveness probe", where)
					}
				}
			}
		})
	}
}

// podsSelected returns the workloads whose pod labels sel selects.
func podsSelected(m *Manifests, sel labels.Selector) []Workload {
	var out []Workload
	for _, w := range m.Workloads() {
		if sel.Matches(labels.Set(w.Template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// containerPort resolves a Service's or NetworkPolicy's port (a number or
// a container port name) in a pod template.
func containerPort(tpl *corev1.PodTemplateSpec, p intstr.IntOrString) (int32, bool) {
	for _, c := range tpl.Spec.Containers {
		for _, cp := range c.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

// TestWiring: Services select pods and reach their ports; PDBs, the HPA and
// NetworkPolicies select what exists; the addresses each ccproxy container
// is given point at a Service port that reaches the listening container.
func TestWiring(t *testing.T) {
	for name, m := range renderAll(t) {
		t.Run(name, func(t *testing.T) {
			for _, o := range m.Objects {
				switch v := o.Value.(type) {
				case *corev1.Service:
					pods := podsSelected(m, labels.SelectorFromSet(v.Spec.Selector))
					if len(v.Spec.Selector) == 0 || len(pods) == 0 {
						t.Errorf("Service %s selects no pods", o.Name)
					}
					for _, p := range v.Spec.Ports {
						for _, w := range pods {
							if _, ok := containerPort(w.Template, p.TargetPort); !ok {
								t.Errorf("Service %s port %s: %s has no container port %s", o.Name, p.Name, w.Name, p.TargetPort.String())
							}
						}
					}
				case *policyv1.PodDisruptionBudget:
					sel, err := metav1.LabelSelectorAsSelector(v.Spec.Selector)
					if err != nil || len(podsSelected(m, sel)) != 1 {
						t.Errorf("PodDisruptionBudget %s selects %d workloads (%v)", o.Name, len(podsSelected(m, sel)), err)
					}
				case *autoscalingv2.HorizontalPodAutoscaler:
					if m.Get(v.Spec.ScaleTargetRef.Kind, v.Spec.ScaleTargetRef.Name) == nil {
						t.Errorf("HPA %s scales a missing %s", o.Name, v.Spec.ScaleTargetRef.Name)
					}
					if d := m.Get("Deployment", v.Spec.ScaleTargetRef.Name); d != nil && d.Value.(*appsv1.Deployment).Spec.Replicas != nil {
						t.Errorf("Deployment %s sets replicas, which would fight the HPA on every apply", d.Name)
					}
				case *networkingv1.NetworkPolicy:
					sel, err := metav1.LabelSelectorAsSelector(&v.Spec.PodSelector)
					if err != nil {
						t.Fatal(err)
					}
					pods := podsSelected(m, sel)
					if len(pods) == 0 {
						t.Errorf("NetworkPolicy %s selects no pods", o.Name)
					}
					for _, in := range v.Spec.Ingress {
						for _, p := range in.Ports {
							for _, w := range pods {
								if _, ok := containerPort(w.Template, *p.Port); !ok {
									t.Errorf("NetworkPolicy %s allows port %s, which %s does not open", o.Name, p.Port.String(), w.Name)
								}
							}
						}
						for _, f := range in.From {
							if f.PodSelector != nil {
								s, _ := metav1.LabelSelectorAsSelector(f.PodSelector)
								if len(podsSelected(m, s)) == 0 {
									t.Errorf("NetworkPolicy %s admits pods that do not exist (%v)", o.Name, s)
								}
							}
						}
					}
				}
			}
			checkAddresses(t, m)
		})
	}
}

// serviceTarget resolves host:port (a Service in the namespace) to the
// container port it reaches and the workloads behind it.
func serviceTarget(m *Manifests, hostport string) (int32, []Workload, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, nil, err
	}
	o := m.Get("Service", host)
	if o == nil {
		return 0, nil, fmt.Errorf("no Service %s", host)
	}
	svc := o.Value.(*corev1.Service)
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.Port)) != port {
			continue
		}
		pods := podsSelected(m, labels.SelectorFromSet(svc.Spec.Selector))
		if len(pods) == 0 {
			return 0, nil, fmt.Errorf("Service %s selects no pods", host)
		}
		cp, ok := containerPort(pods[0].Template, p.TargetPort)
		if !ok {
			return 0, nil, fmt.Errorf("Service %s: no container port %s", host, p.TargetPort.String())
		}
		return cp, pods, nil
	}
	return 0, nil, fmt.Errorf("Service %s has no port %s", host, port)
}

func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

// checkAddresses follows each address a ccproxy container dials to the
// container that listens on it, and each listening address to its
// container port.
func checkAddresses(t *testing.T, m *Manifests) {
	extproc := containerOf(t, m, "ccproxy-gateway", "extproc")
	cp := containerOf(t, m, "ccproxy-controlplane", "controlplane")
	admin := containerOf(t, m, "ccproxy-admin", "admin")
	for _, tc := range []struct {
		dial, setting string
		listener      corev1.Container
		listen        string
	}{
		{env(extproc, "CCPROXY_CONTROLPLANE_ADDR"), "CCPROXY_CONTROLPLANE_ADDR", cp, env(cp, "CCPROXY_XDS_ADDR")},
		{env(extproc, "CCPROXY_KEYSERVICE_ADDR"), "CCPROXY_KEYSERVICE_ADDR", admin, env(admin, "CCPROXY_ADMIN_GRPC_ADDR")},
	} {
		port, _, err := serviceTarget(m, tc.dial)
		if err != nil {
			t.Errorf("extproc's %s %q: %v", tc.setting, tc.dial, err)
			continue
		}
		if port != portOf(t, tc.listen) {
			t.Errorf("extproc's %s reaches port %d; %s listens on %s", tc.setting, port, tc.listener.Name, tc.listen)
		}
	}
	// The listeners the controlplane puts into Envoy's configuration.
	if p := portOf(t, env(cp, "CCPROXY_LISTEN_ADDR")); !hasPort(containerOf(t, m, "ccproxy-gateway", "envoy"), "http", p) {
		t.Errorf("CCPROXY_LISTEN_ADDR port %d is not the Envoy container's http port", p)
	}
	// Every ccproxy container's metrics address is its metrics port, which
	// its probes use.
	for _, w := range m.Workloads() {
		for _, c := range w.Template.Spec.Containers {
			if ccproxyCommand(c) == "" || w.Kind == "Job" {
				continue
			}
			addr := env(c, "CCPROXY_METRICS_ADDR")
			host, _, _ := net.SplitHostPort(addr)
			if host != "0.0.0.0" || !hasPort(c, "metrics", portOf(t, addr)) {
				t.Errorf("%s/%s: CCPROXY_METRICS_ADDR %q is not 0.0.0.0:<its metrics port> (the kubelet probes the pod IP)", w.Name, c.Name, addr)
			}
			for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if p == nil {
					continue
				}
				if p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "metrics" || !slices.Contains([]string{"/readyz", "/healthz"}, p.HTTPGet.Path) {
					t.Errorf("%s/%s: probe %+v is not /readyz or /healthz on the metrics port", w.Name, c.Name, p.ProbeHandler)
				}
			}
			if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s/%s: readiness is not /readyz", w.Name, c.Name)
			}
		}
	}
}

func hasPort(c corev1.Container, name string, port int32) bool {
	for _, p := range c.Ports {
		if p.Name == name && p.ContainerPort == port {
			return true
		}
	}
	return false
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestNoSecretValues: no Secret is committed, every secret setting comes
// from a Secret, and every Secret a pod refers to is one
// docs/deploy-kubernetes.md tells how to create, key included.
func TestNoSecretValues(t *testing.T) {
	doc, err := os.ReadFile("../docs/deploy-kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	// The settings docs/configuration.md marks as secret, and the URLs
	// that carry passwords.
	secret := map[string]bool{"DATABASE_URL": true, "REDIS_URL": true}
	for _, line := range strings.Split(string(must(os.ReadFile("../docs/configuration.md"))), "\n") {
		if strings.Contains(line, "Secret: never logged") {
			secret[strings.Trim(strings.Split(line, "|")[1], " `")] = true
		}
	}
	if !secret["CCPROXY_SERVER_SECRET"] || !secret["CCPROXY_MASTER_KEY"] || !secret["CCPROXY_ADMIN_PASSWORD"] {
		t.Fatalf("secret settings from docs/configuration.md: %v", secret)
	}
	for name, m := range renderAll(t) {
		t.Run(name, func(t *testing.T) {
			for _, o := range m.Objects {
				if o.Kind == "Secret" {
					t.Errorf("Secret %s is in the manifests; create it in the cluster instead", o.Name)
				}
			}
			refs := map[string]bool{}
			for _, w := range m.Workloads() {
				for _, v := range w.Template.Spec.Volumes {
					if v.Secret != nil {
						refs[v.Secret.SecretName] = true
					}
				}
				for _, c := range w.Template.Spec.Containers {
					for _, e := range c.Env {
						if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
							refs[e.ValueFrom.SecretKeyRef.Name+" "+e.ValueFrom.SecretKeyRef.Key] = true
						}
						if secret[e.Name] && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
							t.Errorf("%s/%s sets %s, a secret, other than from a Secret", w.Name, c.Name, e.Name)
						}
					}
				}
			}
			for ref := range refs {
				secret, key, _ := strings.Cut(ref, " ")
				if !bytes.Contains(doc, []byte(secret)) || !bytes.Contains(doc, []byte(key)) {
					t.Errorf("docs/deploy-kubernetes.md does not say how to create Secret %s (key %q)", secret, key)
				}
			}
			if len(refs) == 0 {
				t.Error("no Secret referenced at all")
			}
		})
	}
}

// bootstrapOf decodes the rendered bootstrap ConfigMap the gateway mounts,
// strictly, as Envoy would.
func bootstrapOf(t *testing.T, m *Manifests) (*bootstrapv3.Bootstrap, string) {
	t.Helper()
	var cm *corev1.ConfigMap
	for _, o := range m.Objects {
		if v, ok := o.Value.(*corev1.ConfigMap); ok && strings.HasPrefix(o.Name, "ccproxy-envoy-bootstrap") {
			cm = v
		}
	}
	if cm == nil {
		t.Fatal("no ccproxy-envoy-bootstrap ConfigMap")
	}
	raw := cm.Data["bootstrap.yaml"]
	js, err := yaml.YAMLToJSON([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("the bootstrap ConfigMap does not decode: %v", err)
	}
	return b, raw
}

// TestGatewayPod: Envoy runs the rendered bootstrap (the same validation as
// envoy/bootstrap.yaml), reaches the control plane Service under the name
// its certificate carries, is probed on the stats listener's /ready, shares
// the socket directory with extproc, and its shutdown lets streams finish.
func TestGatewayPod(t *testing.T) {
	for name, m := range renderAll(t) {
		t.Run(name, func(t *testing.T) {
			b, raw := bootstrapOf(t, m)
			if raw != string(envoy.BootstrapYAML()) {
				t.Error("the bootstrap ConfigMap is not envoy/bootstrap.yaml")
			}
			if n, err := xdsvalidate.Deep(b); err != nil {
				t.Errorf("bootstrap: %v", err)
			} else if n == 0 {
				t.Error("bootstrap: nothing validated")
			}
			if dep, err := xdsvalidate.Deprecated(b); err != nil || len(dep) > 0 {
				t.Errorf("bootstrap uses deprecated fields %v (%v)", dep, err)
			}

			dep := m.Get("Deployment", "ccproxy-gateway").Value.(*appsv1.Deployment)
			pod := dep.Spec.Template.Spec
			envoyC := containerOf(t, m, "ccproxy-gateway", "envoy")
			extproc := containerOf(t, m, "ccproxy-gateway", "extproc")
			cpC := containerOf(t, m, "ccproxy-controlplane", "controlplane")

			// The xds cluster: Service name, port, SNI and SAN.
			var xdsHost string
			var xdsPort uint32
			var sni, san string
			for _, c := range b.GetStaticResources().GetClusters() {
				if c.GetName() != "xds" {
					continue
				}
				sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
				xdsHost, xdsPort = sa.GetAddress(), sa.GetPortValue()
				tc := &tlsv3.UpstreamTlsContext{}
				if err := c.GetTransportSocket().GetTypedConfig().UnmarshalTo(tc); err != nil {
					t.Fatal(err)
				}
				sni = tc.GetSni()
				san = tc.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact()
			}
			hostport := net.JoinHostPort(xdsHost, strconv.Itoa(int(xdsPort)))
			port, _, err := serviceTarget(m, hostport)
			if err != nil {
				t.Errorf("the bootstrap's control plane %s: %v", hostport, err)
			} else if port != portOf(t, env(cpC, "CCPROXY_XDS_ADDR")) {
				t.Errorf("the bootstrap's control plane %s reaches port %d, not CCPROXY_XDS_ADDR", hostport, port)
			}
			if sni != xdsHost || san != xdsHost || env(extproc, "CCPROXY_CONTROLPLANE_ADDR") != hostport {
				t.Errorf("control plane name: bootstrap %s (sni %s, SAN %s), extproc %s", hostport, sni, san, env(extproc, "CCPROXY_CONTROLPLANE_ADDR"))
			}

			// Probes: /ready on the stats listener, which forwards it.
			var statsPort uint32
			var routes []string
			for _, l := range b.GetStaticResources().GetListeners() {
				if l.GetName() != "stats" {
					continue
				}
				statsPort = l.GetAddress().GetSocketAddress().GetPortValue()
				h := &hcmv3.HttpConnectionManager{}
				if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
					t.Fatal(err)
				}
				for _, r := range h.GetRouteConfig().GetVirtualHosts()[0].GetRoutes() {
					if r.GetRoute().GetCluster() == "admin" {
						routes = append(routes, r.GetMatch().GetPath())
					}
				}
			}
			if !hasPort(envoyC, "envoy-stats", int32(statsPort)) {
				t.Errorf("envoy-stats is not the stats listener's port %d", statsPort)
			}
			for _, p := range []*corev1.Probe{envoyC.StartupProbe, envoyC.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/ready" || p.HTTPGet.Port.StrVal != "envoy-stats" || !slices.Contains(routes, "/ready") {
					t.Errorf("Envoy probe %+v is not /ready on the stats listener (which forwards %v)", p, routes)
				}
			}

			// The bootstrap file and the SDS files at the paths the bootstrap
			// names, the certificates where the SDS files point.
			mounts := map[string]string{}
			for _, vm := range envoyC.VolumeMounts {
				mounts[vm.MountPath] = vm.Name
			}
			if !slices.Equal(envoyC.Args[:2], []string{"-c", "/etc/envoy/bootstrap.yaml"}) || mounts["/etc/envoy"] != "envoy-bootstrap" {
				t.Errorf("Envoy does not read the mounted bootstrap: %q", envoyC.Args)
			}
			if mounts["/etc/envoy/sds"] != "envoy-sds" || mounts["/etc/envoy/xds-tls"] != "xds-client-tls" {
				t.Errorf("Envoy mounts %v", mounts)
			}
			for _, v := range pod.Volumes {
				if v.Name == "xds-client-tls" && (v.Secret == nil || len(v.Secret.Items) > 0) {
					t.Error("the client certificate must be a whole Secret mounted as a directory (renewals appear in place)")
				}
			}

			// The Unix socket: one emptyDir at the same path in both
			// containers, and the path the control plane gives Envoy is the
			// one extproc listens on.
			sock := env(extproc, "CCPROXY_EXTPROC_ADDR")
			if sock != env(cpC, "CCPROXY_EXTPROC_ADDR") || !strings.HasPrefix(sock, "unix:///") {
				t.Errorf("extproc listens on %q, the control plane sends Envoy to %q", sock, env(cpC, "CCPROXY_EXTPROC_ADDR"))
			}
			dir := filepath.Dir(strings.TrimPrefix(sock, "unix://"))
			vol := func(c corev1.Container) string {
				for _, vm := range c.VolumeMounts {
					if vm.MountPath == dir {
						return vm.Name
					}
				}
				return ""
			}
			if vol(envoyC) == "" || vol(envoyC) != vol(extproc) {
				t.Errorf("%s is not one volume in both containers (envoy %q, extproc %q)", dir, vol(envoyC), vol(extproc))
			}
			for _, v := range pod.Volumes {
				if v.Name == vol(extproc) && v.EmptyDir == nil {
					t.Errorf("the socket volume %s is not an emptyDir", v.Name)
				}
			}
			if envoyC.SecurityContext.RunAsUser == nil || extproc.SecurityContext.RunAsUser == nil || *envoyC.SecurityContext.RunAsUser != *extproc.SecurityContext.RunAsUser {
				t.Error("Envoy and extproc run as different users: Envoy cannot connect to the socket extproc creates (mode 0755)")
			}

			// Shutdown: drain as long as a stream may stay idle, both
			// containers wait as long, the grace period covers it.
			drain := -1
			for i, a := range envoyC.Args {
				if a == "--drain-time-s" && i+1 < len(envoyC.Args) {
					drain, _ = strconv.Atoi(envoyC.Args[i+1])
				}
			}
			if time.Duration(drain)*time.Second != controlplane.DefaultStreamIdleTimeout || time.Duration(drain)*time.Second <= controlplane.ClaudeCodeClientTimeout {
				t.Errorf("--drain-time-s %d, want the stream idle timeout %v (above Claude Code's %v)", drain, controlplane.DefaultStreamIdleTimeout, controlplane.ClaudeCodeClientTimeout)
			}
			pre := envoyC.Lifecycle.PreStop.Exec.Command
			if !strings.Contains(strings.Join(pre, " "), "POST /drain_listeners?graceful") || !strings.HasSuffix(pre[len(pre)-1], fmt.Sprintf("sleep %d", drain)) {
				t.Errorf("Envoy's preStop %q does not drain then wait %d s", pre, drain)
			}
			if s := extproc.Lifecycle.PreStop.Sleep; s == nil || s.Seconds != int64(drain) {
				t.Errorf("extproc's preStop does not wait %d s", drain)
			}
			shutdown, err := time.ParseDuration(env(extproc, "CCPROXY_SHUTDOWN_TIMEOUT"))
			if err != nil {
				t.Fatal(err)
			}
			if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < time.Duration(drain)*time.Second+shutdown+15*time.Second {
				t.Errorf("terminationGracePeriodSeconds %v < drain %d s + shutdown %v + 15 s", g, drain, shutdown)
			}
			// Spread over zones and nodes.
			keys := []string{}
			for _, c := range pod.TopologySpreadConstraints {
				keys = append(keys, c.TopologyKey)
			}
			if !slices.Contains(keys, "topology.kubernetes.io/zone") || !slices.Contains(keys, "kubernetes.io/hostname") {
				t.Errorf("gateway spread over %v", keys)
			}
		})
	}
}

// TestAlertRulesComponent: the monitoring component's PrometheusRule is
// rendered (decoded strictly) and carries the
// same groups as the plain Prometheus rules file beside it, so that either
// way of loading them alerts alike. cmd/ccproxy's TestAlertRules checks the
// rules themselves with Prometheus's parser.
func TestAlertRulesComponent(t *testing.T) {
	m := renderAll(t)["overlays/production+components"]
	o := m.Get("PrometheusRule", "ccproxy")
	if o == nil {
		t.Fatal("the monitoring component renders no PrometheusRule ccproxy")
	}
	raw, err := os.ReadFile("components/monitoring/rules/ccproxy.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var plain PrometheusRule
	if err := yaml.UnmarshalStrict(raw, &plain.Spec); err != nil {
		t.Fatalf("rules/ccproxy.rules.yaml: %v", err)
	}
	got := o.Value.(*PrometheusRule).Spec
	if len(got.Groups) == 0 {
		t.Fatal("the PrometheusRule has no groups")
	}
	if a, b := fmt.Sprintf("%+v", got), fmt.Sprintf("%+v", plain.Spec); a != b {
		t.Errorf("the PrometheusRule's groups differ from rules/ccproxy.rules.yaml; run: go test ./cmd/ccproxy -run TestAlertRules -update")
	}
}
