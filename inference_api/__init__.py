"""The inference API: each site's personalised classifier over REST (issue "Inference API")."""
