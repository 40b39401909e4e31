"""Dataset-wide K-means (torch, CUDA where the input is), the same on 1 or N processes and threads."""

from unsup3d.clustering.kmeans import KMeansResult, kmeans

__all__ = ["KMeansResult", "kmeans"]
