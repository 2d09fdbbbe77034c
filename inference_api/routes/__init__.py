"""HTTP routes. Each handler checks access, then calls one function of ``inference_api.service``."""
