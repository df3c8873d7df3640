// Package k8s holds ccproxy's Kubernetes manifests (a kustomize base, the
// dev and production overlays and optional components) and renders them
// for tests: Render runs kustomize as `kubectl apply -k` would and decodes
// every object strictly into its Kubernetes API type, so that an unknown or
// mistyped field is an error rather than something the API server drops.
package k8s

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one rendered object: its kind and name, its YAML as kustomize
// printed it, and the typed value it decoded into (a *appsv1.Deployment,
// *corev1.Service, ...; for the custom resources of the optional
// components, a *PodMonitor, *PrometheusRule, *Certificate or *Issuer).
type Object struct {
	APIVersion, Kind, Name, Namespace string
	YAML                              []byte
	Value                             any
}

// Manifests are the objects of one rendered kustomization, in kustomize's
// output order.
type Manifests struct {
	Objects []Object
}

// newObject returns a pointer to the Go type of apiVersion/kind, or false
// for a kind the manifests are not expected to contain.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "batch/v1/Job":
		return &batchv1.Job{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, true
	case "monitoring.coreos.com/v1/PodMonitor":
		return &PodMonitor{}, true
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &PrometheusRule{}, true
	case "cert-manager.io/v1/Certificate":
		return &Certificate{}, true
	case "cert-manager.io/v1/Issuer":
		return &Issuer{}, true
	}
	return nil, false
}

// Render builds the kustomization in dir with kustomize's default options
// (files only from inside each kustomization's root, as kubectl does) and
// decodes each object strictly: unknown fields, duplicate keys and values
// of the wrong type are errors, and so is a kind Render does not know.
func Render(dir string) (*Manifests, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	m := &Manifests{}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", r.GetKind(), r.GetName(), err)
		}
		o := Object{APIVersion: r.GetApiVersion(), Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace(), YAML: y}
		v, ok := newObject(o.APIVersion, o.Kind)
		if !ok {
			return nil, fmt.Errorf("%s %s: unexpected kind %s/%s", o.Kind, o.Name, o.APIVersion, o.Kind)
		}
		if err := yaml.UnmarshalStrict(y, v); err != nil {
			return nil, fmt.Errorf("%s %s does not decode strictly as %s/%s: %w", o.Kind, o.Name, o.APIVersion, o.Kind, err)
		}
		o.Value = v
		m.Objects = append(m.Objects, o)
	}
	return m, nil
}

// Get returns the object of kind and name, or nil.
func (m *Manifests) Get(kind, name string) *Object {
	for i := range m.Objects {
		if m.Objects[i].Kind == kind && m.Objects[i].Name == name {
			return &m.Objects[i]
		}
	}
	return nil
}

// Workload is a rendered object that runs pods: its kind, name and pod
// template.
type Workload struct {
	Kind, Name string
	Template   *corev1.PodTemplateSpec
}

// Workloads returns the Deployments, StatefulSets and Jobs.
func (m *Manifests) Workloads() []Workload {
	var out []Workload
	for _, o := range m.Objects {
		switch v := o.Value.(type) {
		case *appsv1.Deployment:
			out = append(out, Workload{o.Kind, o.Name, &v.Spec.Template})
		case *appsv1.StatefulSet:
			out = append(out, Workload{o.Kind, o.Name, &v.Spec.Template})
		case *batchv1.Job:
			out = append(out, Workload{o.Kind, o.Name, &v.Spec.Template})
		}
	}
	return out
}
