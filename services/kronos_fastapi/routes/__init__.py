"""HTTP routes, thin: parse the request, call the service layer, shape the response."""
