package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	// Types named by "@type" in the bootstrap and the SDS files.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/ccproxy/ccproxy/envoy/envoysim"
	"github.com/ccproxy/ccproxy/internal/testenv"
	"github.com/ccproxy/ccproxy/k8s"
	"github.com/ccproxy/ccproxy/test/e2e/internal/claudecode"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// TestKubernetesProductionOverlay runs what the production overlay says,
// on this machine: each container's command with exactly its rendered
// args and env, the migration Job first, then the Deployments, each gated
// on its own readiness probe; envoysim plays the Envoy container, reading
// the rendered bootstrap and SDS files and connecting to the control plane
// over the mutual TLS they describe. A real Claude Code request goes
// through it, then a revocation, then a usage query through the admin API.
//
// What a cluster would provide, the test provides: every Service name and
// container port maps to a free port on 127.0.0.1 (0.0.0.0:P in a pod's
// settings becomes that pod's port P), every volume is a directory
// (Secrets, ConfigMaps and emptyDirs, shared by the containers of a pod as
// in Kubernetes), the Secrets hold generated values and certificates, and
// the operator's "yours" settings are filled in: the master key instead of
// a KMS key. The control plane's CCPROXY_LISTEN_ADDR and
// CCPROXY_EXTPROC_ADDR name Envoy's listener and socket, so they map
// through the gateway pod. api.anthropic.com is a fake behind a test CA,
// which stands in for the image's CA bundle.
func TestKubernetesProductionOverlay(t *testing.T) {
	m, err := k8s.Render("../../k8s/overlays/production")
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "k8s-") // short: Unix socket paths are limited to 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })

	// The operator's Secrets and settings.
	const password = "k8s-e2e-admin-password-5b9c"
	const apiKey = "sk-ant-k8s-e2e-api-key-0c1d"
	redisURL, err := url.Parse(testenv.RedisURL())
	if err != nil {
		t.Fatal(err)
	}
	// A Redis database of its own: the manifests use the default key prefix.
	redisURL.Path = "/13"
	flushRedis(t, redisURL.String())
	t.Cleanup(func() { flushRedis(t, redisURL.String()) })
	secrets := map[string]map[string]string{
		"ccproxy-database": {"DATABASE_URL": testenv.Postgres(t)},
		"ccproxy-redis":    {"REDIS_URL": redisURL.String()},
		"ccproxy-app": {
			"CCPROXY_SERVER_SECRET":  randomBase64(t),
			"CCPROXY_MASTER_KEY":     randomBase64(t),
			"CCPROXY_ADMIN_PASSWORD": password,
		},
	}
	xca := newXDSCA(t)
	tlsSecrets := map[string]map[string][]byte{
		"ccproxy-controlplane-tls": xca.issue(t, "ccproxy-controlplane", x509.ExtKeyUsageServerAuth),
		"ccproxy-gateway-xds-tls":  xca.issue(t, "", x509.ExtKeyUsageClientAuth),
		"ccproxy-keyservice-tls":   xca.issue(t, "ccproxy-keyservice", x509.ExtKeyUsageServerAuth),
	}
	settings := map[string]string{}
	for k, v := range configMap(t, m, "ccproxy-settings").Data {
		settings[k] = v
	}
	settings["CCPROXY_KMS_KEY_ID"] = ""

	// The fake Anthropic, on its real name behind a test CA.
	upstreamCA := fakebedrock.NewCA(t)
	fake := fakeanthropic.NewTLS(t, func(r fakeanthropic.Request) fakeanthropic.Reply {
		u := fakeanthropic.Usage{Input: 21, Output: 5}
		if stream, _ := r.JSON()["stream"].(bool); stream {
			return fakeanthropic.Reply{Events: fakeanthropic.Stream(r.Model(), u, fakeanthropic.Block{Text: "Hello through the Kubernetes manifests."})}
		}
		return fakeanthropic.Reply{Body: fakeanthropic.Message(r.Model(), "Hello through the Kubernetes manifests.", u)}
	}, upstreamCA.Leaf(t, "api.anthropic.com"))

	c := &cluster{t: t, m: m, root: root, secrets: secrets, tlsSecrets: tlsSecrets, settings: settings, pods: map[string]*podRun{}}
	for _, w := range m.Workloads() {
		c.addPod(w)
	}

	// 1. The migration Job, to completion.
	job := m.Get("Job", "ccproxy-migrate").Value.(*batchv1.Job)
	if p := job.Spec.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
		t.Fatalf("Job restart policy %s", p)
	}
	c.runToCompletion("ccproxy-migrate", job.Spec.Template.Spec.Containers[0])

	// 2. The Deployments, each ready by its own readiness probe.
	ctx := t.Context()
	for _, name := range []string{"ccproxy-admin", "ccproxy-controlplane", "ccproxy-gateway"} {
		dep := m.Get("Deployment", name).Value.(*appsv1.Deployment)
		for _, ctr := range dep.Spec.Template.Spec.Containers {
			if ctr.Name == "envoy" {
				continue // below: envoysim
			}
			extra := []string(nil)
			if ctr.Name == "controlplane" {
				// The image's CA bundle, which the default
				// CCPROXY_UPSTREAM_CA_FILE names: here the test CA.
				extra = append(extra, "CCPROXY_UPSTREAM_CA_FILE="+upstreamCA.File)
			}
			c.start(ctx, name, ctr, extra)
		}
		for _, ctr := range dep.Spec.Template.Spec.Containers {
			if ctr.Name != "envoy" {
				c.waitReady(name, ctr)
			}
		}
	}

	// 3. Envoy's part: envoysim with the rendered bootstrap and SDS files.
	gw := c.pods["ccproxy-gateway"]
	envoyC := container(t, m, "ccproxy-gateway", "envoy")
	sim := c.startEnvoysim(ctx, gw, envoyC, map[string]string{"api.anthropic.com:443": fake.Addr()})
	if want := gw.ports[portNamed(t, envoyC, "http")]; sim.Addr() != want {
		t.Fatalf("envoysim's listener is on %s; the gateway pod's http port maps to %s", sim.Addr(), want)
	}

	// 4. A developer and an access key, through the admin API.
	adminAddr := c.resolve("ccproxy-admin:8081")
	a := admin{t: t, base: "http://" + adminAddr, token: adminLogin(t, adminAddr, "admin", password)}
	dev := a.user("Kubernetes Developer", "plan_first", nil)
	base := "http://" + sim.Addr() + "/ak/" + dev.Key

	// 5. Claude Code through the gateway.
	res := claudecode.Run{Bin: binaries.claude, BaseURL: base, APIKey: apiKey, Timeout: 2 * time.Minute}.Prompt(t, "Say hello.")
	wantPrinted(t, res, "Hello through the Kubernetes manifests.")
	msgs := fake.Requests("/v1/messages")
	if len(msgs) == 0 {
		t.Fatal("no request reached Anthropic")
	}
	for _, r := range msgs {
		if r.Header.Get("x-api-key") != apiKey {
			t.Errorf("Anthropic got x-api-key %q, want the developer's own key passed through", r.Header.Get("x-api-key"))
		}
	}

	// 6. Revocation: the key is refused once the invalidation arrives.
	var keys struct {
		Items []struct{ ID string } `json:"items"`
	}
	a.call("GET", "/api/v1/users/"+dev.ID+"/keys", nil, &keys)
	if len(keys.Items) != 1 {
		t.Fatalf("keys: %+v", keys)
	}
	a.call("DELETE", "/api/v1/keys/"+keys.Items[0].ID, nil, nil)
	revoked := time.Now()
	for {
		req, _ := http.NewRequest(http.MethodHead, base+"/api/hello", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized {
			break
		}
		if time.Since(revoked) > revocationBound {
			t.Fatalf("the gateway still accepts the key %v after the revocation", revocationBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := len(fake.Requests(""))
	res = claudecode.Run{Bin: binaries.claude, BaseURL: base, APIKey: apiKey, Timeout: 2 * time.Minute}.Prompt(t, "Say hello again.")
	if out := res.Stdout + res.Stderr; res.ExitCode == 0 || !strings.Contains(out, "401") {
		t.Errorf("Claude Code with the revoked key: exit %d, output %q; want the gateway's 401", res.ExitCode, out)
	}
	if n := len(fake.Requests("")) - before; n != 0 {
		t.Errorf("Anthropic received %d requests with the revoked key", n)
	}
	// 7. The usage of those requests, through the admin API.
	var rows []struct {
		UserID   string `json:"user_id"`
		Provider string `json:"provider"`
		Status   int    `json:"status"`
	}
	deadline := time.Now().Add(revocationBound)
	for {
		var page struct {
			Items json.RawMessage `json:"items"`
		}
		a.call("GET", "/api/v1/usage/requests?user_id="+dev.ID, nil, &page)
		if err := json.Unmarshal(page.Items, &rows); err != nil {
			t.Fatal(err)
		}
		if len(rows) >= len(msgs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage rows %d after %v, want %d (one per request Anthropic answered)", len(rows), revocationBound, len(msgs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, r := range rows {
		if r.UserID != dev.ID || r.Provider != "anthropic" || r.Status != 200 {
			t.Errorf("usage row %+v", r)
		}
	}
}

// cluster is the test's stand-in for a Kubernetes cluster: pods as
// directories and port maps, containers as processes.
type cluster struct {
	t          *testing.T
	m          *k8s.Manifests
	root       string
	secrets    map[string]map[string]string
	tlsSecrets map[string]map[string][]byte
	settings   map[string]string
	pods       map[string]*podRun
}

// podRun is one pod: its template, a loopback address for each container
// port, a directory for each volume.
type podRun struct {
	name  string
	spec  *corev1.PodSpec
	ports map[int32]string
	vols  map[string]string
}

func (c *cluster) addPod(w k8s.Workload) {
	t := c.t
	p := &podRun{name: w.Name, spec: &w.Template.Spec, ports: map[int32]string{}, vols: map[string]string{}}
	for _, ctr := range p.spec.Containers {
		for _, cp := range ctr.Ports {
			p.ports[cp.ContainerPort] = freeAddrs(t, 1)[0]
		}
	}
	for _, v := range p.spec.Volumes {
		dir := filepath.Join(c.root, strings.TrimPrefix(w.Name, "ccproxy-")+"-"+v.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		p.vols[v.Name] = dir
		files := map[string][]byte{}
		switch {
		case v.Secret != nil:
			s, ok := c.tlsSecrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("%s mounts Secret %s, which the test does not create", w.Name, v.Secret.SecretName)
			}
			files = s
		case v.ConfigMap != nil:
			for k, val := range configMap(t, c.m, v.ConfigMap.Name).Data {
				files[k] = []byte(val)
			}
		case v.EmptyDir != nil:
		default:
			t.Fatalf("%s: volume %s of an unsupported type", w.Name, v.Name)
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.pods[w.Name] = p
}

// resolve maps a Service's host:port to the loopback address of the
// container port behind it.
func (c *cluster) resolve(hostport string) string {
	c.t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		c.t.Fatal(err)
	}
	o := c.m.Get("Service", host)
	if o == nil {
		c.t.Fatalf("no Service %s", host)
	}
	svc := o.Value.(*corev1.Service)
	for _, sp := range svc.Spec.Ports {
		if strconv.Itoa(int(sp.Port)) != port {
			continue
		}
		for _, w := range c.m.Workloads() {
			if !labelsMatch(svc.Spec.Selector, w.Template.Labels) {
				continue
			}
			for _, ctr := range w.Template.Spec.Containers {
				for _, cp := range ctr.Ports {
					if cp.Name == sp.TargetPort.StrVal || cp.ContainerPort == sp.TargetPort.IntVal {
						return c.pods[w.Name].ports[cp.ContainerPort]
					}
				}
			}
		}
	}
	c.t.Fatalf("Service %s has no port %s reaching a container", host, port)
	return ""
}

func labelsMatch(sel, lbls map[string]string) bool {
	for k, v := range sel {
		if lbls[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// mapValue turns a setting's value in pod p's container ctr into its value
// on this machine: listening addresses, Service addresses and mounted paths.
func (c *cluster) mapValue(p *podRun, ctr corev1.Container, v string) string {
	c.t.Helper()
	if host, port, err := net.SplitHostPort(v); err == nil && !strings.Contains(v, "/") {
		n, _ := strconv.Atoi(port)
		if host == "0.0.0.0" {
			addr, ok := p.ports[int32(n)]
			if !ok {
				c.t.Fatalf("%s/%s listens on %s, which is not a container port", p.name, ctr.Name, v)
			}
			return addr
		}
		if c.m.Get("Service", host) != nil {
			return c.resolve(v)
		}
	}
	best := ""
	for _, vm := range ctr.VolumeMounts {
		if strings.Contains(v, vm.MountPath+"/") && len(vm.MountPath) > len(best) {
			best = vm.MountPath
		}
	}
	if best != "" {
		for _, vm := range ctr.VolumeMounts {
			if vm.MountPath == best {
				return strings.Replace(v, best+"/", p.vols[vm.Name]+"/", 1)
			}
		}
	}
	return v
}

// environ is the container's environment as the kubelet would set it,
// mapped to this machine.
func (c *cluster) environ(p *podRun, ctr corev1.Container) []string {
	t := c.t
	t.Helper()
	gw := c.pods["ccproxy-gateway"]
	var out []string
	for _, e := range ctr.Env {
		v, set := e.Value, true
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			v, set = c.secrets[r.Name][r.Key]
			if !set && (r.Optional == nil || !*r.Optional) {
				t.Fatalf("%s/%s needs Secret %s key %s", p.name, ctr.Name, r.Name, r.Key)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			v, set = c.settings[r.Key]
			if r.Name != "ccproxy-settings" || !set && (r.Optional == nil || !*r.Optional) {
				t.Fatalf("%s/%s needs ConfigMap %s key %s", p.name, ctr.Name, r.Name, r.Key)
			}
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			v = p.name + "-0"
		default:
			t.Fatalf("%s/%s: env %s from an unsupported source", p.name, ctr.Name, e.Name)
		}
		if !set {
			continue
		}
		if ctr.Name == "controlplane" && (e.Name == "CCPROXY_LISTEN_ADDR" || e.Name == "CCPROXY_EXTPROC_ADDR") {
			// Addresses in the gateway pod, which the control plane
			// writes into Envoy's configuration.
			v = c.mapValue(gw, container(t, c.m, "ccproxy-gateway", "envoy"), v)
		} else {
			v = c.mapValue(p, ctr, v)
		}
		out = append(out, e.Name+"="+v)
	}
	return out
}

func (c *cluster) command(ctx context.Context, pod string, ctr corev1.Container, extra []string) (*exec.Cmd, *tail) {
	c.t.Helper()
	if len(ctr.Command) > 0 {
		c.t.Fatalf("%s/%s overrides the image's entrypoint: %q", pod, ctr.Name, ctr.Command)
	}
	p := c.pods[pod]
	cmd := exec.CommandContext(ctx, binaries.ccproxy, ctr.Args...)
	cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.root}, c.environ(p, ctr)...), extra...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	logs := &tail{max: 256 << 10}
	cmd.Stdout, cmd.Stderr = logs, logs
	return cmd, logs
}

func (c *cluster) runToCompletion(pod string, ctr corev1.Container) {
	c.t.Helper()
	cmd, logs := c.command(c.t.Context(), pod, ctr, nil)
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("%s/%s (ccproxy %s): %v\n%s", pod, ctr.Name, strings.Join(ctr.Args, " "), err, logs)
	}
}

func (c *cluster) start(ctx context.Context, pod string, ctr corev1.Container, extra []string) {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	cmd, logs := c.command(ctx, pod, ctr, extra)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("%s/%s logs (end):\n%s", pod, ctr.Name, logs)
		}
	})
}

// waitReady polls the container's readiness probe like the kubelet.
func (c *cluster) waitReady(pod string, ctr corev1.Container) {
	t := c.t
	t.Helper()
	pr := ctr.ReadinessProbe
	if pr == nil || pr.HTTPGet == nil {
		t.Fatalf("%s/%s has no HTTP readiness probe", pod, ctr.Name)
	}
	addr := c.pods[pod].ports[portNamed(t, ctr, pr.HTTPGet.Port.StrVal)]
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + pr.HTTPGet.Path)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 400 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s not ready (GET %s on %s) after 90 s: %v", pod, ctr.Name, pr.HTTPGet.Path, pr.HTTPGet.Port.String(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startEnvoysim starts envoysim as the Envoy container: the bootstrap file
// its args name, the control plane address and TLS settings of its xds
// cluster, the certificate files its SDS files name.
func (c *cluster) startEnvoysim(ctx context.Context, p *podRun, ctr corev1.Container, hosts map[string]string) *envoysim.Sim {
	t := c.t
	t.Helper()
	i := slices.Index(ctr.Args, "-c")
	if i < 0 || i+1 >= len(ctr.Args) {
		t.Fatalf("Envoy args %q name no bootstrap", ctr.Args)
	}
	b := &bootstrapv3.Bootstrap{}
	decodeYAMLFile(t, c.mapValue(p, ctr, ctr.Args[i+1]), b)
	var xdsAddr string
	var tc tlsv3.UpstreamTlsContext
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() != b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() {
			continue
		}
		sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		xdsAddr = c.resolve(net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
		if err := cl.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tc); err != nil {
			t.Fatal(err)
		}
	}
	if xdsAddr == "" {
		t.Fatal("the bootstrap has no ADS cluster")
	}
	ctc := tc.GetCommonTlsContext()
	certSDS := readSDS(t, c.mapValue(p, ctr, ctc.GetTlsCertificateSdsSecretConfigs()[0].GetSdsConfig().GetPathConfigSource().GetPath()))
	caSDS := readSDS(t, c.mapValue(p, ctr, ctc.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetSdsConfig().GetPathConfigSource().GetPath()))
	cert, err := tls.LoadX509KeyPair(
		c.mapValue(p, ctr, certSDS.GetTlsCertificate().GetCertificateChain().GetFilename()),
		c.mapValue(p, ctr, certSDS.GetTlsCertificate().GetPrivateKey().GetFilename()))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(c.mapValue(p, ctr, caSDS.GetValidationContext().GetTrustedCa().GetFilename()))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate in the trusted CA file")
	}
	san := ctc.GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()[0].GetMatcher().GetExact()
	if san != tc.GetSni() {
		t.Fatalf("the bootstrap checks SAN %s but sends SNI %s", san, tc.GetSni())
	}
	creds := credentials.NewTLS(&tls.Config{ServerName: san, Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13})

	dialer := &net.Dialer{}
	logs := &tail{max: 256 << 10}
	sim, err := envoysim.New(envoysim.Options{
		XDSAddress: xdsAddr, XDSCredentials: creds, NodeID: p.name + "-0",
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			if to, ok := hosts[address]; ok {
				address = to
			}
			return dialer.DialContext(ctx, network, address)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("envoysim logs (end):\n%s", logs)
		}
	})
	select {
	case <-sim.Ready():
	case err := <-done:
		t.Fatalf("envoysim: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatalf("envoysim got no listener from the control plane in 90 s\n%s", logs)
	}
	return sim
}

func readSDS(t *testing.T, path string) *tlsv3.Secret {
	t.Helper()
	r := &discoveryv3.DiscoveryResponse{}
	decodeYAMLFile(t, path, r)
	if len(r.GetResources()) != 1 {
		t.Fatalf("%s: %d resources", path, len(r.GetResources()))
	}
	s := &tlsv3.Secret{}
	if err := r.GetResources()[0].UnmarshalTo(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func decodeYAMLFile(t *testing.T, path string, m proto.Message) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func configMap(t *testing.T, m *k8s.Manifests, name string) *corev1.ConfigMap {
	t.Helper()
	o := m.Get("ConfigMap", name)
	if o == nil {
		t.Fatalf("no ConfigMap %s", name)
	}
	return o.Value.(*corev1.ConfigMap)
}

func container(t *testing.T, m *k8s.Manifests, deployment, name string) corev1.Container {
	t.Helper()
	for _, ctr := range m.Get("Deployment", deployment).Value.(*appsv1.Deployment).Spec.Template.Spec.Containers {
		if ctr.Name == name {
			return ctr
		}
	}
	t.Fatalf("no container %s in %s", name, deployment)
	return corev1.Container{}
}

func portNamed(t *testing.T, ctr corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range ctr.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("%s has no port %s", ctr.Name, name)
	return 0
}

func randomBase64(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func flushRedis(t *testing.T, u string) {
	t.Helper()
	out, err := exec.Command("redis-cli", "-u", u, "FLUSHDB").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("OK")) {
		t.Fatalf("redis-cli -u %s FLUSHDB: %v %s", u, err, out)
	}
}

// xdsCA issues the xDS certificates, as cert-manager or an operator's
// openssl commands would (docs/deploy-kubernetes.md).
type xdsCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newXDSCA(t *testing.T) *xdsCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ccproxy xDS CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &xdsCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a kubernetes.io/tls Secret's files with ca.crt, as
// cert-manager writes them.
func (ca *xdsCA) issue(t *testing.T, dnsName string, usage x509.ExtKeyUsage) map[string][]byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "ccproxy " + fmt.Sprint(usage)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if dnsName != "" {
		tmpl.DNSNames = []string{dnsName}
		// The test's "cluster DNS" maps every Service to 127.0.0.1, and a
		// client checks the certificate against the host it dials.
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		"ca.crt":  ca.pem,
	}
}
