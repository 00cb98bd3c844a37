/* app3: the default app, answering every Host that no route names. */
#include "app.h"

static const struct app_def app3 = {
    .name = "app3",
    .title = "Hello from app3",
    .tagline = "The default app: any Host that is neither app1.com nor app2.com lands here.",
    .accent = "#bf3989",
    .background = "linear-gradient(135deg,#ffe3f1,#f5a3cf)",
};

int
main(void)
{
    return app_main(&app3);
}
