"""The built-in Chat and Spend pages: static HTML + CSS + ES modules and the routes serving them."""
