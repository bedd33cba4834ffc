"""Edge agent for the customer-site gateway box."""
