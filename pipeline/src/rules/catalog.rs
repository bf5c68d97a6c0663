//! The vocabularies rules are checked and measured against: the cells of Microsoft's Threat
//! Matrix for Kubernetes, and the AKS hardening controls the rule pack sets out to cover. `rules
//! lint` refuses names outside them (a typo would silently drop a rule from coverage), and
//! `rules coverage` reports which are covered.

/// Microsoft Threat Matrix for Kubernetes, as "Tactic - Technique".
pub const THREAT_MATRIX: &[&str] = &[
    "Initial access - Using cloud credentials",
    "Initial access - Compromised image in registry",
    "Initial access - Kubeconfig file",
    "Initial access - Application vulnerability",
    "Initial access - Exposed sensitive interfaces",
    "Execution - Exec into container",
    "Execution - bash/cmd inside container",
    "Execution - New container",
    "Execution - Application exploit (RCE)",
    "Execution - SSH server running inside container",
    "Execution - Sidecar injection",
    "Persistence - Backdoor container",
    "Persistence - Writable hostPath mount",
    "Persistence - Kubernetes CronJob",
    "Persistence - Malicious admission controller",
    "Persistence - Container service account",
    "Persistence - Static pods",
    "Privilege escalation - Privileged container",
    "Privilege escalation - Cluster-admin binding",
    "Privilege escalation - hostPath mount",
    "Privilege escalation - Access cloud resources",
    "Defense evasion - Clear container logs",
    "Defense evasion - Delete K8S events",
    "Defense evasion - Pod / container name similarity",
    "Defense evasion - Connect from proxy server",
    "Credential access - List K8S secrets",
    "Credential access - Mount service principal",
    "Credential access - Container service account",
    "Credential access - Application credentials in configuration files",
    "Credential access - Access managed identity credential",
    "Credential access - Malicious admission controller",
    "Discovery - Access the K8S API server",
    "Discovery - Access Kubelet API",
    "Discovery - Network mapping",
    "Discovery - Exposed sensitive interfaces",
    "Discovery - Instance Metadata API",
    "Lateral movement - Access cloud resources",
    "Lateral movement - Container service account",
    "Lateral movement - Cluster internal networking",
    "Lateral movement - Application credentials in configuration files",
    "Lateral movement - Writable hostPath mount",
    "Lateral movement - CoreDNS poisoning",
    "Lateral movement - ARP poisoning and IP spoofing",
    "Collection - Images from a private registry",
    "Collection - Collecting data from pod",
    "Impact - Data destruction",
    "Impact - Resource hijacking",
    "Impact - Denial of service",
];

/// The controls AKS hardening guidance asks a detection pack to watch (issues 5 and 6), by id.
pub const CONTROLS: &[(&str, &str)] = &[
    ("privileged-pods", "privileged containers"),
    ("host-pid", "pods sharing the host PID namespace"),
    ("host-ipc", "pods sharing the host IPC namespace"),
    ("host-network", "pods on the host network"),
    ("sensitive-hostpath", "hostPath mounts of runtime sockets, /etc, /proc, /root, /var/log…"),
    ("root-containers", "containers running as root"),
    ("privilege-escalation", "allowPrivilegeEscalation"),
    ("added-capabilities", "added capabilities (SYS_ADMIN, NET_ADMIN, SYS_PTRACE…)"),
    ("system-namespace-workloads", "workloads in kube-system/kube-public/kube-node-lease with images off the system list"),
    ("system-namespace-by-people", "workloads or service accounts created in system namespaces by people"),
    ("untrusted-registries", "images from registries outside the allowed list"),
    ("mutable-tags", "images by mutable tag"),
    ("exec-attach", "exec and attach into pods"),
    ("port-forward", "port-forward to pods"),
    ("secrets-broad-access", "secrets listed or read broadly"),
    ("rbac-cluster-admin", "RBAC changes granting cluster-admin"),
    ("rbac-wildcards", "RBAC roles with wildcard verbs or resources"),
    ("impersonation", "impersonation"),
    ("token-requests", "TokenRequest by unusual identities"),
    ("automount-default-sa", "automountServiceAccountToken left on for default service accounts"),
    ("local-accounts", "local (non-Entra ID) accounts used on an Entra ID cluster"),
    ("anonymous-access", "anonymous access"),
    ("unauthorized-source-ip", "API access from outside the authorized IP ranges"),
    ("networkpolicy-deleted", "NetworkPolicy deleted"),
    ("admission-webhooks", "validating/mutating webhook configurations changed or deleted"),
    ("policy-constraints-deleted", "Azure Policy / Gatekeeper constraints deleted"),
    ("system-configmaps", "kube-system ConfigMaps edited (coredns, …)"),
    ("cronjobs-daemonsets-by-people", "CronJobs and DaemonSets created by people"),
    ("node-proxy-kubelet", "node proxy and kubelet API access"),
    ("failed-auth-bursts", "bursts of failed authentication or authorization (windowed)"),
    ("discovery-sweeps", "discovery sweeps (windowed)"),
    ("missing-limits", "pods without resource limits"),
    // Issue 15: what real clusters and other vendors' suites showed missing.
    ("system-rbac-tampering", "built-in system:* ClusterRoles and bindings changed"),
    ("credentials-in-configmaps", "credentials stored in ConfigMaps instead of Secrets"),
    ("client-certificates", "client certificates requested through CertificateSigningRequests"),
    ("public-exposure", "Services exposed outside the cluster (public LoadBalancer, NodePort)"),
    ("unconfined-profiles", "seccomp or AppArmor set to Unconfined"),
    ("ingress-tls", "Ingresses without TLS"),
    // Container Insights (issue 6): what happened in the containers and on the nodes.
    ("container-log-threats", "reverse shells, crypto miners, scripts piped into a shell in container logs"),
    ("crash-oom-bursts", "OOMKilled and CrashLoopBackOff bursts (windowed)"),
    ("new-images", "first sighting of an image in a cluster (stateful)"),
    ("node-notready-flapping", "nodes flapping NotReady (windowed)"),
    ("system-pod-restarts", "pods restarting in kube-system (windowed)"),
];

pub fn is_threat_matrix_cell(s: &str) -> bool {
    THREAT_MATRIX.contains(&s)
}

pub fn is_control(s: &str) -> bool {
    CONTROLS.iter().any(|(id, _)| *id == s)
}
