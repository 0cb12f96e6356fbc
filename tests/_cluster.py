"""The throwaway PostgreSQL cluster lives in the library, for the demo."""

from __future__ import annotations

from django_safelive._tools.cluster import Cluster, ClusterError

__all__ = ["Cluster", "ClusterError"]
