"""Results bundles committed beside the docs pages, and the reports that regenerate those pages from them."""
