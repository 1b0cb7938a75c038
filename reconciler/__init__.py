"""reconciler: GitOps for Ansible-managed hosts."""

__version__ = "0.1.0"
