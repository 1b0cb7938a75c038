"""Tests of the shipped playbook and role against real local hosts."""
