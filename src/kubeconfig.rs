//! Kube client and kubeconfig files from facts + native tokens (EKS, GKE, AKS).
