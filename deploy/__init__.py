"""Deployment tooling: the local cloud, Ansible roles and Kolla images."""
