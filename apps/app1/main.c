/* app1: the single-replica app behind Host app1.com. */
#include "app.h"

static const struct app_def app1 = {
    .name = "app1",
    .title = "Hello from app1",
    .tagline = "The first app: one replica, reached with Host app1.com.",
    .accent = "#1f6feb",
    .background = "linear-gradient(135deg,#dbe9ff,#9ec5ff)",
};

int
main(void)
{
    return app_main(&app1);
}
