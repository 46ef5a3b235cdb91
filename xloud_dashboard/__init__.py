"""Horizon plugin: the Elastic Sizing admin panel."""
