"""Dataset-wide K-means on faiss (GPU when there is one), the same on 1 or N processes."""

from unsup3d.clustering.kmeans import KMeansResult, faiss_has_gpu, kmeans

__all__ = ["KMeansResult", "faiss_has_gpu", "kmeans"]
