"""What every protocol's HTTP shares: middleware, bounded bodies, socket guards, dependencies, the dialect registry."""
